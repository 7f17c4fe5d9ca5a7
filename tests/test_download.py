"""fetch(): verified, resumable, atomic downloads from file://, http, apt, npm and gdown sources."""
import hashlib
import http.server
import os
import re
import stat
import sys
import threading
import time

import pytest

from asif_nb import clients, download
from asif_nb.download import DownloadError, fetch, fetch_file
from asif_nb.transfer import Limits

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, so a resume offset is well inside the file
# Tight limits so a misbehaving mirror is caught within about a second and retries do not wait.
FAST = Limits(connect_timeout=2.0, read_timeout=2.0, min_rate=1000.0, grace=0.5, retries=2, backoff=0.01)
DRIVE_PAGE = (
    b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>"
    b"Too many users have viewed or downloaded this file recently.</body></html>"
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ASIF_CACHE", str(tmp_path / "cache"))


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _entry(sources, data=PAYLOAD, name="blob.bin", **extra):
    entry = {
        "id": "blob", "description": "test", "kind": "images", "count": 1, "licence": "MIT", "citation": "-",
        "version": "1", "files": [{"name": name, "sha256": _sha(data), "bytes": len(data)}], "sources": sources,
    }
    entry.update(extra)
    return {"blob": entry}


def _file_source(path):
    return {"type": "file", "url": path.as_uri()}


def _serve(tmp_path, name, data):
    path = tmp_path / "sources" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return _file_source(path)


def _folder():
    return download.cache_dir() / "downloads" / "blob"


# ------------------------------------------------------------------------------------ file:// sources

def test_success_returns_the_folder_with_the_verified_file(tmp_path):
    folder = fetch("blob", manifest=_entry([_serve(tmp_path, "blob.bin", PAYLOAD)]), progress=False)
    assert folder == _folder()
    assert (folder / "blob.bin").read_bytes() == PAYLOAD
    assert not list(folder.glob("*.part"))


def test_second_call_is_a_cache_hit_that_needs_no_source(tmp_path):
    manifest = _entry([_serve(tmp_path, "blob.bin", PAYLOAD)])
    fetch("blob", manifest=manifest, progress=False)
    (tmp_path / "sources" / "blob.bin").unlink()
    assert (fetch("blob", manifest=manifest, progress=False) / "blob.bin").read_bytes() == PAYLOAD


def test_cache_hits_hash_a_file_once_after_it_changes_on_disk(tmp_path, monkeypatch):
    manifest = _entry([_serve(tmp_path, "blob.bin", PAYLOAD)])
    target = fetch("blob", manifest=manifest, progress=False) / "blob.bin"
    hashed = []
    monkeypatch.setattr(download, "sha256_file", lambda path: hashed.append(path) or _sha(PAYLOAD))
    fetch("blob", manifest=manifest, progress=False)
    assert hashed == []  # size and mtime match the record: no re-hash
    os.utime(target, ns=(0, 0))  # touched, same bytes
    fetch("blob", manifest=manifest, progress=False)
    fetch("blob", manifest=manifest, progress=False)
    assert hashed == [target]  # hashed once, then recorded again


def test_a_file_changed_in_the_cache_is_detected_and_fetched_again(tmp_path):
    manifest = _entry([_serve(tmp_path, "blob.bin", PAYLOAD)])
    target = fetch("blob", manifest=manifest, progress=False) / "blob.bin"
    target.write_bytes(b"x" + PAYLOAD[1:])  # same size, new mtime: the cheap check must not pass it
    assert (fetch("blob", manifest=manifest, progress=False) / "blob.bin").read_bytes() == PAYLOAD


@pytest.mark.parametrize("bad", [PAYLOAD[: len(PAYLOAD) // 3], b"\xee" + PAYLOAD[1:]], ids=["truncated", "corrupted"])
def test_a_mismatch_deletes_the_file_and_reports_both_hashes(tmp_path, bad):
    with pytest.raises(DownloadError) as raised:
        fetch("blob", manifest=_entry([_serve(tmp_path, "blob.bin", bad)]), progress=False)
    message = str(raised.value)
    assert "deleted" in message and _sha(PAYLOAD) in message and _sha(bad) in message
    assert f"{len(PAYLOAD)} bytes" in message and f"got {len(bad)} bytes" in message
    assert "put blob.bin into" in message  # the next step when every source fails
    assert not any(_folder().glob("blob.bin*"))


def test_after_a_mismatch_the_next_source_is_tried(tmp_path):
    sources = [_serve(tmp_path, "bad.bin", PAYLOAD[:100]), _serve(tmp_path, "good.bin", PAYLOAD)]
    assert (fetch("blob", manifest=_entry(sources), progress=False) / "blob.bin").read_bytes() == PAYLOAD


def test_resume_continues_from_the_part_file(tmp_path):
    half = len(PAYLOAD) // 2
    # The source's first half is garbage: only a download that resumes after the .part gets the right bytes.
    source = _serve(tmp_path, "blob.bin", b"\xff" * half + PAYLOAD[half:])
    _folder().mkdir(parents=True)
    (_folder() / "blob.bin.part").write_bytes(PAYLOAD[:half])
    assert (fetch("blob", manifest=_entry([source]), progress=False) / "blob.bin").read_bytes() == PAYLOAD


def test_a_bad_part_file_is_discarded_and_the_download_restarted(tmp_path):
    _folder().mkdir(parents=True)
    (_folder() / "blob.bin.part").write_bytes(b"\xff" * 1000)
    manifest = _entry([_serve(tmp_path, "blob.bin", PAYLOAD)])
    assert (fetch("blob", manifest=manifest, progress=False) / "blob.bin").read_bytes() == PAYLOAD


def test_google_drive_quota_page_is_recognised_and_the_next_source_tried(tmp_path):
    sources = [_serve(tmp_path, "uc", DRIVE_PAGE), _serve(tmp_path, "mirror.bin", PAYLOAD)]
    assert (fetch("blob", manifest=_entry(sources), progress=False) / "blob.bin").read_bytes() == PAYLOAD


def test_google_drive_quota_page_as_last_source_tells_the_user_what_to_do(tmp_path):
    with pytest.raises(DownloadError, match=r"(?s)Google Drive answered.*wait 24 hours.*place it in"):
        fetch("blob", manifest=_entry([_serve(tmp_path, "uc", DRIVE_PAGE)]), progress=False)


def test_all_sources_failing_gives_one_error_listing_each(tmp_path):
    sources = [_file_source(tmp_path / "missing.bin"), _serve(tmp_path, "short.bin", PAYLOAD[:10])]
    with pytest.raises(DownloadError) as raised:
        fetch("blob", manifest=_entry(sources), progress=False)
    lines = str(raised.value).splitlines()
    assert lines[0] == "could not fetch 'blob': every source failed:"
    assert "missing.bin" in lines[1] and "No such file" in lines[1]
    assert "short.bin" in lines[2] and "did not match" in lines[2]


def test_force_downloads_again(tmp_path):
    manifest = _entry([_serve(tmp_path, "blob.bin", PAYLOAD)])
    fetch("blob", manifest=manifest, progress=False)
    (tmp_path / "sources" / "blob.bin").unlink()
    with pytest.raises(DownloadError):
        fetch("blob", manifest=manifest, progress=False, force=True)


def test_dest_overrides_the_cache_folder(tmp_path):
    folder = fetch("blob", manifest=_entry([_serve(tmp_path, "blob.bin", PAYLOAD)]), dest=tmp_path / "d", progress=False)
    assert folder == tmp_path / "d" and (folder / "blob.bin").read_bytes() == PAYLOAD


def test_multi_file_entries_fill_the_name_into_the_url(tmp_path):
    other = b"second file"
    _serve(tmp_path, "a.bin", PAYLOAD)
    _serve(tmp_path, "b.txt", other)
    manifest = _entry([{"type": "file", "url": (tmp_path / "sources").as_uri() + "/{name}"}], name="a.bin")
    manifest["blob"]["files"].append({"name": "b.txt", "sha256": _sha(other), "bytes": len(other)})
    assert fetch_file("blob", "b.txt", manifest=manifest, progress=False).read_bytes() == other
    assert (_folder() / "a.bin").read_bytes() == PAYLOAD
    with pytest.raises(ValueError, match="holds 2 files: pass name="):
        fetch_file("blob", manifest=manifest)


def test_unknown_artifact_is_a_clear_value_error():
    with pytest.raises(ValueError, match="artifact_id='nope' is not in the manifest: use one of .*openclipart-svg"):
        fetch("nope")


# ------------------------------------------------------------------------------------ trust on first use, md5

def _tofu(sources, **file_fields):
    manifest = _entry(sources, verify="on-first-download")
    manifest["blob"]["files"][0].update(sha256=None, bytes=None, **file_fields)
    return manifest


def test_first_download_hash_is_recorded_and_enforced_afterwards(tmp_path):
    manifest = _tofu([_serve(tmp_path, "blob.bin", PAYLOAD)])
    fetch("blob", manifest=manifest, progress=False)
    (tmp_path / "sources" / "blob.bin").write_bytes(b"changed upstream")
    with pytest.raises(DownloadError, match=f"sha256 {_sha(PAYLOAD)}"):
        fetch("blob", manifest=manifest, progress=False, force=True)
    # The failed call changed nothing: the verified first download is still there and still a cache hit.
    assert (fetch("blob", manifest=manifest, progress=False) / "blob.bin").read_bytes() == PAYLOAD
    assert not list(_folder().glob("*.part"))


def test_an_html_page_is_never_trusted_on_first_use(tmp_path):
    with pytest.raises(DownloadError, match="Google Drive"):
        fetch("blob", manifest=_tofu([_serve(tmp_path, "uc", DRIVE_PAGE)]), progress=False)


def test_a_published_md5_is_checked(tmp_path):
    good = _tofu([_serve(tmp_path, "blob.bin", PAYLOAD)], md5=hashlib.md5(PAYLOAD).hexdigest())
    fetch("blob", manifest=good, progress=False)
    bad = _tofu([_serve(tmp_path, "blob.bin", PAYLOAD)], md5="0" * 32)
    with pytest.raises(DownloadError, match="md5 0{32}"):
        fetch("blob", manifest=bad, progress=False, dest=tmp_path / "other")


# ------------------------------------------------------------------------------------ http(s)

class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Routes: path -> (body, content type[, behaviour]). Every misbehaviour is bounded, so no test can hang."""

    routes: dict = {}
    ranges_seen: list = []
    requests: list = []
    gate = threading.Event()  # the "gated" behaviour waits for it (10 s at most)

    def do_GET(self):
        body, content_type, *rest = self.routes[self.path]
        behaviour = rest[0] if rest else "bytes"
        self.requests.append(self.path)
        start = 0
        if self.headers.get("Range"):
            self.ranges_seen.append(self.headers["Range"])
            if behaviour != "ignore-range":
                start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            if start >= len(body):
                self.send_error(416)
                return
        try:
            self._answer(behaviour, body, content_type, start)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up: what the misbehaving routes expect

    def _answer(self, behaviour, body, content_type, start):
        if behaviour.startswith("status:"):
            self.send_error(int(behaviour.split(":")[1]))
            return
        if behaviour == "flaky" and self.requests.count(self.path) == 1:
            self.send_error(503)
            return
        if behaviour == "gated":
            self.gate.wait(10)
        if behaviour == "slow":
            time.sleep(0.5)
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", content_type)
        if behaviour not in ("endless", "unannounced"):
            self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if behaviour == "trickle":  # a byte every 0.2 s, 50 at most
            for byte in body[start : start + 50]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        elif behaviour == "endless":  # until the client hangs up, 256 MiB at most
            for _ in range(4096):
                self.wfile.write(b"\0" * 65536)
        elif behaviour == "close-early":  # announces the rest, sends 1000 bytes, hangs up
            self.wfile.write(body[start : start + 1000])
        else:
            self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    _RangeHandler.routes, _RangeHandler.ranges_seen, _RangeHandler.requests = {}, [], []
    _RangeHandler.gate = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _RangeHandler
    server.shutdown()
    server.server_close()


def test_http_resume_sends_a_range_request(http_server):
    base, handler = http_server
    half = len(PAYLOAD) // 2
    handler.routes["/blob.bin"] = (PAYLOAD, "application/octet-stream")
    _folder().mkdir(parents=True)
    (_folder() / "blob.bin.part").write_bytes(PAYLOAD[:half])
    folder = fetch("blob", manifest=_entry([{"type": "https", "url": base + "/blob.bin"}]), progress=False)
    assert (folder / "blob.bin").read_bytes() == PAYLOAD
    assert handler.ranges_seen == [f"bytes={half}-"]


def test_http_416_on_a_full_length_part_restarts_from_zero(http_server):
    base, handler = http_server
    handler.routes["/blob.bin"] = (PAYLOAD, "application/octet-stream")
    _folder().mkdir(parents=True)
    (_folder() / "blob.bin.part").write_bytes(b"\xff" * len(PAYLOAD))  # as long as the file, but wrong
    manifest = _tofu([{"type": "https", "url": base + "/blob.bin"}])  # no size known: the server must say 416
    assert (fetch("blob", manifest=manifest, progress=False) / "blob.bin").read_bytes() == PAYLOAD
    assert handler.ranges_seen == [f"bytes={len(PAYLOAD)}-"]


def test_http_html_answer_is_recognised_as_a_drive_page(http_server):
    base, handler = http_server
    handler.routes["/uc"] = (DRIVE_PAGE, "text/html; charset=utf-8")
    handler.routes["/mirror"] = (PAYLOAD, "application/octet-stream")
    sources = [{"type": "https", "url": base + "/uc"}, {"type": "https", "url": base + "/mirror"}]
    with pytest.raises(DownloadError, match="Google Drive"):
        fetch("blob", manifest=_entry(sources[:1]), progress=False)
    assert (fetch("blob", manifest=_entry(sources), progress=False) / "blob.bin").read_bytes() == PAYLOAD


def _https(base, path):
    return {"type": "https", "url": base + path}


def test_a_trickling_mirror_is_stopped_and_the_failure_says_so(http_server):
    base, handler = http_server
    handler.routes["/slow"] = (PAYLOAD, "application/octet-stream", "trickle")
    limits = Limits(connect_timeout=2.0, read_timeout=2.0, min_rate=1000.0, grace=0.5, retries=1, backoff=0.01)
    with pytest.raises(DownloadError) as raised:
        fetch("blob", manifest=_entry([_https(base, "/slow")]), progress=False, limits=limits)
    message = str(raised.value)
    assert message.startswith("could not fetch 'blob': every source failed:")
    assert f"https {base}/slow: failed 2 times: 1) stalled: " in message and "2) stalled: " in message
    assert "below the minimum of 1000 B/s" in message and "try again later or use another mirror" in message
    assert not (_folder() / "blob.bin").exists()


@pytest.mark.parametrize("behaviour", ["endless", "unannounced", "bytes"])
def test_a_mirror_sending_more_than_the_manifest_size_is_stopped_at_the_cap(http_server, behaviour):
    base, handler = http_server
    handler.routes["/big"] = (PAYLOAD + b"and then some", "application/octet-stream", behaviour)
    with pytest.raises(DownloadError) as raised:
        fetch("blob", manifest=_entry([_https(base, "/big")]), progress=False, limits=FAST)
    line = str(raised.value).splitlines()[1]
    assert line.startswith(f"  - https {base}/big: ")
    if behaviour == "bytes":  # the size was announced: refused before a byte is read
        assert f"announces {len(PAYLOAD) + 13} bytes, more than the expected size ({len(PAYLOAD)} bytes)" in line
    else:
        assert f"more than {len(PAYLOAD)} bytes arrived (the expected size)" in line
    assert not list(_folder().glob("blob.bin*"))  # nothing under the final name, no .part to resume from
    assert handler.requests == ["/big"]  # a broken cap is not worth a retry


def test_a_trust_on_first_use_file_is_capped_at_its_max_bytes(http_server):
    base, handler = http_server
    handler.routes["/endless"] = (PAYLOAD, "application/octet-stream", "endless")
    manifest = _tofu([_https(base, "/endless")], max_bytes=300_000)
    with pytest.raises(DownloadError, match=r"more than 300000 bytes arrived \(the cap max_bytes\)"):
        fetch("blob", manifest=manifest, progress=False, limits=FAST)
    assert not list(_folder().glob("blob.bin*"))


def test_a_mirror_closing_early_is_retried_from_where_it_stopped_then_reported(http_server):
    base, handler = http_server
    handler.routes["/cut"] = (PAYLOAD, "application/octet-stream", "close-early")
    manifest = _entry([_https(base, "/cut")])
    with pytest.raises(DownloadError) as raised:
        fetch("blob", manifest=manifest, progress=False, limits=FAST)
    message = str(raised.value)
    assert "failed 3 times: 1) truncated: the connection closed at byte 1000 of the 1048576 announced; " in message
    assert "3) truncated: the connection closed at byte 3000 " in message
    assert handler.ranges_seen == ["bytes=1000-", "bytes=2000-"]
    # The bytes that did arrive are kept: once the mirror recovers, the next call resumes after them.
    handler.routes["/cut"] = (PAYLOAD, "application/octet-stream")
    assert (fetch("blob", manifest=manifest, progress=False, limits=FAST) / "blob.bin").read_bytes() == PAYLOAD
    assert handler.ranges_seen[-1] == "bytes=3000-"


def test_a_503_is_retried_and_the_retry_succeeds(http_server):
    base, handler = http_server
    handler.routes["/flaky"] = (PAYLOAD, "application/octet-stream", "flaky")
    folder = fetch("blob", manifest=_entry([_https(base, "/flaky")]), progress=False, limits=FAST)
    assert (folder / "blob.bin").read_bytes() == PAYLOAD and handler.requests == ["/flaky", "/flaky"]


def test_each_mirror_failure_is_reported_and_a_404_is_not_retried(http_server):
    base, handler = http_server
    handler.routes["/gone"] = (PAYLOAD, "application/octet-stream", "status:404")
    handler.routes["/down"] = (PAYLOAD, "application/octet-stream", "status:503")
    with pytest.raises(DownloadError) as raised:
        fetch("blob", manifest=_entry([_https(base, "/gone"), _https(base, "/down")]), progress=False, limits=FAST)
    lines = str(raised.value).splitlines()
    assert lines[1] == (f"  - https {base}/gone: HTTP 404 Not Found; "
                        "the file is not there: the mirror moved or removed it")
    assert lines[2].startswith(f"  - https {base}/down: failed 3 times: 1) HTTP 503 Service Unavailable; 2) HTTP 503")
    assert handler.requests == ["/gone", "/down", "/down", "/down"]


def test_a_mirror_that_ignores_range_is_downloaded_from_the_start(http_server):
    base, handler = http_server
    half = len(PAYLOAD) // 2
    handler.routes["/blob.bin"] = (PAYLOAD, "application/octet-stream", "ignore-range")
    _folder().mkdir(parents=True)
    (_folder() / "blob.bin.part").write_bytes(b"\xff" * half)  # appended to, this would give a wrong file
    folder = fetch("blob", manifest=_entry([_https(base, "/blob.bin")]), progress=False, limits=FAST)
    assert (folder / "blob.bin").read_bytes() == PAYLOAD
    assert handler.ranges_seen == [f"bytes={half}-"] and handler.requests == ["/blob.bin"]


def test_two_concurrent_fetches_download_once(http_server):
    base, handler = http_server
    handler.routes["/blob"] = (PAYLOAD, "application/octet-stream", "slow")  # 0.5 s before it answers
    manifest = _entry([_https(base, "/blob")])
    start, results, errors = threading.Barrier(2), [], []

    def worker():
        start.wait(10)
        try:
            results.append(fetch("blob", manifest=manifest, progress=False, limits=FAST))
        except Exception as err:  # reported below, not lost in the thread
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)  # a guard against a hang, not a speed test
    assert not any(thread.is_alive() for thread in threads) and errors == []
    assert results == [_folder(), _folder()] and handler.requests == ["/blob"]  # the second found it in the cache
    assert (_folder() / "blob.bin").read_bytes() == PAYLOAD


def test_a_fetch_that_waits_too_long_for_the_lock_says_why(http_server):
    base, handler = http_server
    handler.routes["/blob"] = (PAYLOAD, "application/octet-stream", "gated")  # answers once the gate opens
    manifest = _entry([_https(base, "/blob")])
    results = []
    holder = threading.Thread(target=lambda: results.append(fetch("blob", manifest=manifest, progress=False)))
    holder.start()
    try:
        deadline = time.monotonic() + 10
        while not handler.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handler.requests == ["/blob"]  # the holder has the lock and is waiting on the mirror
        with pytest.raises(DownloadError, match=r"another process \(or thread\) is fetching the same artifact into "
                           + re.escape(str(_folder())) + r".*lock_timeout=0\.2 s"):
            fetch("blob", manifest=manifest, progress=False, lock_timeout=0.2)
    finally:
        handler.gate.set()
        holder.join(30)
    assert results == [_folder()] and handler.requests == ["/blob"]


# ------------------------------------------------------------------------------------ apt, npm, gdown (fakes)

def _fake_tool(bin_dir, name, script):
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _package_entry(kind, data=PAYLOAD):
    return _entry([{"type": kind, "package": "pkg", "version": "1.0-1"}], data=data, name="pkg_1.0-1_all.deb")


def test_apt_runs_update_once_when_the_lists_lack_the_package(tmp_path, monkeypatch):
    bin_dir, source = tmp_path / "bin", tmp_path / "sources" / "pkg.deb"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    log = tmp_path / "apt.log"
    _fake_tool(bin_dir, "apt-get", f"""echo "$@" >> {log}
if [ "$1" = update ]; then touch {tmp_path}/lists; exit 0; fi
if [ ! -e {tmp_path}/lists ]; then echo "E: Unable to locate package pkg" >&2; exit 100; fi
cp {source} "./pkg_1%3a1.0-1_all.deb"
""")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(clients, "_apt_lists_updated", False)
    folder = fetch("blob", manifest=_package_entry("apt"), progress=False)
    assert (folder / "pkg_1.0-1_all.deb").read_bytes() == PAYLOAD  # renamed to the manifest's name
    assert log.read_text().splitlines() == ["download pkg=1.0-1", "update", "download pkg=1.0-1"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".client-")]


def test_without_apt_get_the_next_source_is_used(tmp_path, monkeypatch):
    monkeypatch.setattr(clients.shutil, "which", lambda name: None)
    manifest = _package_entry("apt")
    manifest["blob"]["sources"].append(_serve(tmp_path, "mirror.deb", PAYLOAD))
    assert (fetch("blob", manifest=manifest, progress=False) / "pkg_1.0-1_all.deb").read_bytes() == PAYLOAD
    manifest["blob"]["sources"].pop()
    with pytest.raises(DownloadError, match="apt-get is not available here"):
        fetch("blob", manifest=manifest, progress=False, force=True)


def test_npm_pack_writes_into_the_pack_destination(tmp_path, monkeypatch):
    bin_dir, source = tmp_path / "bin", tmp_path / "sources" / "pkg.tgz"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    _fake_tool(bin_dir, "npm", f"""if [ "$1" = --version ]; then echo 11.2.0; exit 0; fi
[ "$1" = pack ] && [ "$2" = pkg@1.0-1 ] && [ "$4" = --pack-destination ] || exit 1
cp {source} "$5/pkg-1.0-1.tgz"
""")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    folder = fetch("blob", manifest=_package_entry("npm"), progress=False)
    assert (folder / "pkg_1.0-1_all.deb").read_bytes() == PAYLOAD


def _gdown_stand_in(tmp_path, monkeypatch, body):
    """Put a script in gdown's place: it is called as <script> <id> -O <output> --quiet."""
    script = tmp_path / "gdown_stand_in.py"
    prelude = "import subprocess, sys, time\nfrom pathlib import Path\nfile_id, flag, output = sys.argv[1:4]\n"
    script.write_text(prelude + body)
    monkeypatch.setattr(clients, "GDOWN_COMMAND", [sys.executable, str(script)])


def _gdown_entry():
    return _entry([{"type": "gdown", "id": "1abcdefghijk"}])


def _alive(pid):
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")  # a zombie is dead, merely not yet reaped


def _dead_soon(pid):
    deadline = time.monotonic() + 5  # a guard against a hang, not a speed test
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def test_gdown_source_is_verified(tmp_path, monkeypatch):
    source, calls = tmp_path / "sources" / "blob.bin", tmp_path / "calls"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    _gdown_stand_in(tmp_path, monkeypatch, f"""Path({str(calls)!r}).write_text(" ".join(sys.argv[1:]))
partial = Path(output + "abcdefgh.part")  # gdown writes beside the output, then renames
partial.write_bytes(Path({str(source)!r}).read_bytes())
partial.rename(output)
""")
    folder = fetch("blob", manifest=_gdown_entry(), progress=False)
    assert (folder / "blob.bin").read_bytes() == PAYLOAD
    assert calls.read_text().startswith("1abcdefghijk -O ") and calls.read_text().endswith(" --quiet")
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["blob.bin"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".gdown-")]


GDOWN_FOOTER = r"\nTo report issues, please visit https://github.com/wkentaro/gdown/issues."


def test_gdown_quota_error_is_mapped_to_the_drive_message(tmp_path, monkeypatch):
    # gdown wraps its message over indented lines: here between "Too many" and "users".
    _gdown_stand_in(tmp_path, monkeypatch, f"""print("Failed to retrieve file url:\\n\\n\\tToo many", file=sys.stderr)
print("\\tusers have viewed or downloaded this file recently.{GDOWN_FOOTER}", file=sys.stderr)
sys.exit(1)
""")
    with pytest.raises(DownloadError, match=r"(?s)Google Drive refused.*Too many users have viewed.*wait 24 hours"):
        fetch("blob", manifest=_gdown_entry(), progress=False)


def test_a_gdown_failure_reports_its_error_not_its_footer(tmp_path, monkeypatch):
    _gdown_stand_in(tmp_path, monkeypatch, f"""
print("Error:\\n\\n\\tConnectionPool(host='drive.google.com'): Failed to", file=sys.stderr)
print("\\tresolve 'drive.google.com' (Name or service not known){GDOWN_FOOTER}", file=sys.stderr)
sys.exit(1)
""")
    with pytest.raises(DownloadError) as raised:
        fetch("blob", manifest=_gdown_entry(), progress=False)
    message = str(raised.value)
    assert ("gdown id 1abcdefghijk: gdown failed (exit status 1): ConnectionPool(host='drive.google.com'): Failed to "
            "resolve 'drive.google.com' (Name or service not known)") in message
    assert "To report issues" not in message


@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_gdown_writing_without_end_is_killed_at_the_cap(tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    _gdown_stand_in(tmp_path, monkeypatch, f"""
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
Path({str(pids)!r}).write_text(f"{{child.pid}} {{__import__('os').getpid()}}")
with open(output, "wb") as handle:
    for _ in range(2000):  # 32 MiB in 20 s at most, if nobody stops it
        handle.write(b"x" * 16384)
        handle.flush()
        time.sleep(0.01)
""")
    with pytest.raises(DownloadError) as raised:
        fetch("blob", manifest=_gdown_entry(), progress=False)
    assert f"gdown id 1abcdefghijk: wrote more than the cap of {len(PAYLOAD)} bytes" in str(raised.value)
    assert "(the tool was stopped)" in str(raised.value)
    assert all(_dead_soon(int(pid)) for pid in pids.read_text().split()), "gdown or its child outlived the cap"
    assert [p.name for p in _folder().iterdir() if not p.name.startswith(".")] == []


def test_gdown_that_stalls_is_killed_at_the_deadline(tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    _gdown_stand_in(tmp_path, monkeypatch, f"""Path({str(pids)!r}).write_text(str(__import__('os').getpid()))
Path(output).write_bytes(b"0123456789")
time.sleep(20)
""")
    limits = Limits(connect_timeout=2.0, read_timeout=5.0, min_rate=1000.0, grace=1.0, retries=1, backoff=0.01)
    with pytest.raises(DownloadError) as raised:
        fetch("blob", manifest=_gdown_entry(), progress=False, limits=limits)
    message = str(raised.value)
    assert re.search(r"gdown id 1abcdefghijk: failed 2 times: 1\) stalled: \d+ bytes in ", message)
    assert "below the minimum of 1000 B/s (the tool was stopped)" in message and "use another mirror" in message
    assert _dead_soon(int(pids.read_text()))


@pytest.mark.slow
def test_real_apt_download_of_the_smallest_demo_package():
    path = fetch_file("dataset-fashion-mnist", progress=False)
    entry = download.load_manifest()["dataset-fashion-mnist"]
    assert path.stat().st_size == entry["files"][0]["bytes"]
    assert path.read_bytes()[:8] == b"!<arch>\n"  # a Debian package is an ar archive
