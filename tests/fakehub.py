"""A local stand-in for the Hugging Face hub, for tests: only what the suite's hub code speaks.

``FakeHub`` serves, on 127.0.0.1, ``GET`` / ``HEAD`` of ``/{datasets/}<repo>/resolve/<revision>/<path>`` the way
the hub does for plain files: ``Content-Length``, ``ETag`` (the sha256, quoted), ``X-Repo-Commit``,
``Accept-Ranges`` and ``Range`` → ``206``; an unknown repo, revision or file is a 404 with the hub's
``X-Error-Code``. Point code at it with ``HF_ENDPOINT=hub.url``.

Each file can misbehave on purpose (``Fault``): answer 503 a few times, trickle, close early (truncated), serve
different bytes (a corrupt copy) for its first requests, or wait on a gate before sending its body. Every request
is logged in ``hub.requests`` as ``(method, path, range header)``.

It also accepts what ``huggingface_hub.HfApi.upload_folder`` sends (``create_repo``, ``preupload``, ``commit``)
for small files uploaded inline, so a bundle pushed with ``push_bundle`` can be read back from it.
"""
from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field


@dataclass
class Fault:
    fail_times: int = 0  # answer 503 this many times first
    trickle_s: float = 0.0  # seconds between bytes of the body
    truncate_at: int | None = None  # close the connection after this many body bytes (Content-Length stays full)
    truncate_times: int = 10**9  # ... for the first this many GETs
    corrupt: bytes | None = None  # serve these bytes instead, for the first `corrupt_times` GETs
    corrupt_times: int = 10**9
    gate: threading.Event | None = None  # GET bodies wait until this is set
    served: int = field(default=0)


@dataclass
class _Repo:
    commit: str
    files: dict = field(default_factory=dict)


def _commit_of(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


class FakeHub:
    def __init__(self):
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.faults: dict[tuple[str, str, str], Fault] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._resolve(self, body=False)

            def do_GET(self):
                hub._resolve(self, body=True)

            def do_POST(self):
                hub._post(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------------------------------ setting up
    def add_file(self, repo: str, path: str, data: bytes, repo_type: str = "dataset") -> str:
        """Add (or replace) a file; each change makes a new commit. Returns the repo's commit."""
        with self.lock:
            entry = self.repos.setdefault((repo_type, repo), _Repo(_commit_of(repo)))
            entry.files[path] = bytes(data)
            entry.commit = _commit_of(entry.commit + path + hashlib.sha256(data).hexdigest())
            return entry.commit

    def commit(self, repo: str, repo_type: str = "dataset") -> str:
        return self.repos[(repo_type, repo)].commit

    def fault(self, repo: str, path: str, repo_type: str = "dataset", **kwargs) -> Fault:
        fault = Fault(**kwargs)
        self.faults[(repo_type, repo, path)] = fault
        return fault

    def gets(self, path_suffix: str) -> int:
        return sum(1 for method, path, _ in self.requests if method == "GET" and path.endswith(path_suffix))

    # ------------------------------------------------------------------------------------------ serving
    def _parse(self, raw_path: str):
        parts = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path).strip("/").split("/")
        repo_type = "model"
        if parts and parts[0] in ("datasets", "spaces"):
            repo_type, parts = parts[0][:-1], parts[1:]
        if len(parts) < 5 or parts[2] != "resolve":
            return None
        return repo_type, "/".join(parts[:2]), parts[3], "/".join(parts[4:])

    def _error(self, handler, status: int, code: str, message: str, body: bool = True):
        data = json.dumps({"error": message}).encode()
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        handler.send_header("X-Error-Message", message)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def _resolve(self, handler, body: bool):
        self.requests.append((handler.command, handler.path, handler.headers.get("Range")))
        parsed = self._parse(handler.path)
        if parsed is None:
            return self._error(handler, 404, "EntryNotFound", "not a resolve URL", body)
        repo_type, repo, revision, path = parsed
        entry = self.repos.get((repo_type, repo))
        if entry is None:
            return self._error(handler, 404, "RepoNotFound", f"repository {repo} not found", body)
        if revision not in ("main", entry.commit):
            return self._error(handler, 404, "RevisionNotFound", f"revision {revision} not found", body)
        if path not in entry.files:
            return self._error(handler, 404, "EntryNotFound", f"{path} not found", body)
        data = entry.files[path]
        fault = self.faults.get((repo_type, repo, path))
        served = 0
        if fault is not None and body:
            with self.lock:
                fault.served += 1
                served = fault.served
            if served <= fault.fail_times:
                return self._error(handler, 503, "ServiceUnavailable", "try again", body)
            if fault.corrupt is not None and served - fault.fail_times <= fault.corrupt_times:
                data = fault.corrupt
        start, end = 0, len(data)
        range_header = handler.headers.get("Range")
        if range_header and range_header.startswith("bytes="):
            first, _, last = range_header[6:].partition("-")
            start = int(first or 0)
            end = int(last) + 1 if last else len(data)
            if start >= len(data):
                return self._error(handler, 416, "RangeNotSatisfiable", "range not satisfiable", body)
        handler.send_response(206 if range_header else 200)
        handler.send_header("Content-Length", str(end - start))
        if range_header:
            handler.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        handler.send_header("ETag", f'"{hashlib.sha256(entry.files[path]).hexdigest()}"')
        handler.send_header("X-Repo-Commit", entry.commit)
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        if not body:
            return
        payload = data[start:end]
        try:
            if fault is not None and fault.gate is not None:
                fault.gate.wait(60)
            if fault is not None and fault.truncate_at is not None and served - fault.fail_times <= fault.truncate_times:
                handler.wfile.write(payload[:fault.truncate_at])
                handler.wfile.flush()
                handler.close_connection = True
                return
            if fault is not None and fault.trickle_s:
                for i in range(len(payload)):
                    handler.wfile.write(payload[i:i + 1])
                    handler.wfile.flush()
                    time.sleep(fault.trickle_s)
                return
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    # ------------------------------------------------------------------------------------------ uploads
    def _post(self, handler):
        self.requests.append(("POST", handler.path, None))
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        path = urllib.parse.urlsplit(handler.path).path.strip("/").split("/")

        def reply(status: int, document: dict):
            data = json.dumps(document).encode()
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

        if path[:3] == ["api", "repos", "create"]:
            request = json.loads(raw or b"{}")
            repo = f"{request.get('organization') or 'user'}/{request['name']}" if "/" not in request["name"] \
                else request["name"]
            repo_type = request.get("type") or "model"
            with self.lock:
                self.repos.setdefault((repo_type, repo), _Repo(_commit_of(repo)))
            return reply(200, {"url": f"{self.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo}",
                               "name": repo})
        if len(path) >= 6 and path[0] == "api" and path[4] in ("preupload", "commit"):
            repo_type = path[1][:-1]
            repo = f"{path[2]}/{path[3]}"
            if (repo_type, repo) not in self.repos:
                return reply(404, {"error": f"repository {repo} not found"})
            if path[4] == "preupload":
                files = json.loads(raw).get("files", [])
                return reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                             for f in files]})
            for line in raw.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if item.get("key") == "file":
                    value = item["value"]
                    content = base64.b64decode(value["content"]) if value.get("encoding") == "base64" \
                        else value["content"].encode()
                    self.add_file(repo, value["path"], content, repo_type)
                elif item.get("key") == "lfsFile":
                    return reply(400, {"error": "this fake hub takes inline (regular) uploads only"})
            commit = self.repos[(repo_type, repo)].commit
            return reply(200, {"commitUrl": f"{self.url}/{repo}/commit/{commit}", "commitOid": commit,
                               "commitMessage": "upload", "pullRequestUrl": None})
        reply(404, {"error": f"no route for POST {handler.path}"})


def tar_shard(samples) -> bytes:
    """A webdataset shard as bytes: ``samples`` are dicts ``{"__key__": key, "jpg": bytes, "txt": str, ...}``
    (members in the dict's order, as webdataset's TarWriter writes them)."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for sample in samples:
            for field_name, value in sample.items():
                if field_name == "__key__":
                    continue
                data = value.encode("utf-8") if isinstance(value, str) else value
                info = tarfile.TarInfo(f"{sample['__key__']}.{field_name}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
