"""fetch(): verified, resumable, atomic downloads from file://, http, apt, npm and gdown sources."""
import hashlib
import http.server
import os
import stat
import sys
import threading
import types

import pytest

from asif_nb import download
from asif_nb.download import DownloadError, fetch, fetch_file

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, so a resume offset is well inside the file
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
    routes: dict = {}
    ranges_seen: list = []

    def do_GET(self):
        body, content_type = self.routes[self.path]
        start = 0
        if self.headers.get("Range"):
            self.ranges_seen.append(self.headers["Range"])
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            if start >= len(body):
                self.send_error(416)
                return
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    _RangeHandler.routes, _RangeHandler.ranges_seen = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
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
    monkeypatch.setattr(download, "_apt_lists_updated", False)
    folder = fetch("blob", manifest=_package_entry("apt"), progress=False)
    assert (folder / "pkg_1.0-1_all.deb").read_bytes() == PAYLOAD  # renamed to the manifest's name
    assert log.read_text().splitlines() == ["download pkg=1.0-1", "update", "download pkg=1.0-1"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".client-")]


def test_without_apt_get_the_next_source_is_used(tmp_path, monkeypatch):
    monkeypatch.setattr(download.shutil, "which", lambda name: None)
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


def _fake_gdown(monkeypatch, behaviour):
    module = types.ModuleType("gdown")
    module.download = behaviour
    monkeypatch.setitem(sys.modules, "gdown", module)


def test_gdown_source_is_verified(tmp_path, monkeypatch):
    calls = []

    def download_(id, output, quiet):
        calls.append(id)
        with open(output, "wb") as handle:
            handle.write(PAYLOAD)

    _fake_gdown(monkeypatch, download_)
    folder = fetch("blob", manifest=_entry([{"type": "gdown", "id": "1abcdefghijk"}]), progress=False)
    assert calls == ["1abcdefghijk"] and (folder / "blob.bin").read_bytes() == PAYLOAD


def test_gdown_quota_error_is_mapped_to_the_drive_message(tmp_path, monkeypatch):
    def download_(id, output, quiet):
        raise RuntimeError("Failed to retrieve file url:\n\n\tToo many users have viewed or downloaded this file recently.")

    _fake_gdown(monkeypatch, download_)
    with pytest.raises(DownloadError, match=r"(?s)Google Drive refused.*wait 24 hours"):
        fetch("blob", manifest=_entry([{"type": "gdown", "id": "1abcdefghijk"}]), progress=False)


@pytest.mark.slow
def test_real_apt_download_of_the_smallest_demo_package():
    path = fetch_file("dataset-fashion-mnist", progress=False)
    entry = download.load_manifest()["dataset-fashion-mnist"]
    assert path.stat().st_size == entry["files"][0]["bytes"]
    assert path.read_bytes()[:8] == b"!<arch>\n"  # a Debian package is an ar archive
