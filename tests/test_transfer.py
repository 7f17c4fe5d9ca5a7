"""open_stream and with_retries against a local mirror that misbehaves on purpose.

Every server binds 127.0.0.1 and every misbehaviour is bounded (a trickle stops after 50 bytes, an endless stream
after 64 MiB, a silence after 3 s), so nothing here can hang even if the code under test does not stop it.
"""
import http.server
import pickle
import socket
import threading
import time
import urllib.error

import pytest

from asif_nb.transfer import Limits, TransferError, is_transient, open_stream, with_retries

BODY = bytes(range(256)) * 64  # 16 KiB
# Tight limits so each misbehaviour is caught within about a second.
FAST = Limits(connect_timeout=2.0, read_timeout=2.0, min_rate=1000.0, grace=0.5, retries=2, backoff=0.01)


class _Mirror(http.server.BaseHTTPRequestHandler):
    """Routes: path -> (behaviour, body). Requests are recorded as (path, Range header or None)."""

    routes: dict = {}
    requests: list = []

    def do_GET(self):
        behaviour, body = self.routes[self.path]
        self.requests.append((self.path, self.headers.get("Range")))
        start = 0
        if self.headers.get("Range") and behaviour in ("bytes", "close-early", "flaky"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
        try:
            getattr(self, "_" + behaviour.split(":")[0].replace("-", "_"))(behaviour, body, start)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up: what the tests want

    def _head(self, status, length, start=0, total=None):
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if length is not None:
            self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.end_headers()

    def _bytes(self, behaviour, body, start):
        if start >= len(body) > 0:
            self.send_error(416)
            return
        self._head(206 if start else 200, len(body) - start, start, len(body))
        self.wfile.write(body[start:])

    def _ignore_range(self, behaviour, body, start):
        self._head(200, len(body))
        self.wfile.write(body)

    def _flaky(self, behaviour, body, start):  # 503 on the first request of the route, then a good answer
        if sum(1 for path, _ in self.requests if path == self.path) == 1:
            self.send_error(503)
            return
        self._bytes(behaviour, body, start)

    def _status(self, behaviour, body, start):  # "status:404"
        self.send_error(int(behaviour.split(":")[1]))

    def _trickle(self, behaviour, body, start):  # announces the whole body, sends a byte every 0.2 s
        self._head(200, len(body))
        for byte in body[:50]:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.2)

    def _silent(self, behaviour, body, start):  # headers, then nothing for 3 s
        self._head(200, len(body))
        self.wfile.flush()
        time.sleep(3)

    def _no_headers(self, behaviour, body, start):  # connection accepted, no answer for 3 s
        time.sleep(3)

    def _header_trickle(self, behaviour, body, start):  # the status line a byte every 0.1 s (5 s at most)
        for byte in b"HTTP/1.0 200 OK\r\nX-Padding: " + b"x" * 40:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.1)

    def _chunk_trickle(self, behaviour, body, start):  # one chunk, then a chunk-size line a byte every 0.1 s
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(body), body))
        for byte in b"0" * 50 + b"1\r\n":
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.1)

    def _endless(self, behaviour, body, start):  # no Content-Length, data until the client hangs up (64 MiB at most)
        self._head(200, None)
        for _ in range(64 * 1024 // 64):
            self.wfile.write(b"\0" * 65536)

    def _unannounced(self, behaviour, body, start):  # the whole body, no Content-Length: ends when the socket closes
        self._head(200, None)
        self.wfile.write(body)

    def _close_early(self, behaviour, body, start):  # announces the rest of the file, sends 1000 bytes, hangs up
        self._head(206 if start else 200, len(body) - start, start, len(body))
        self.wfile.write(body[start : start + 1000])

    def log_message(self, *args):
        pass


class _Server:
    def __init__(self, server):
        self.base = f"http://127.0.0.1:{server.server_address[1]}"
        self.routes, self.requests = _Mirror.routes, _Mirror.requests

    def route(self, path, behaviour="bytes", body=BODY):
        self.routes[path] = (behaviour, body)
        return self.base + path


@pytest.fixture
def mirror():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    _Mirror.routes, _Mirror.requests = {}, []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield _Server(server)
    server.shutdown()
    server.server_close()


def _read_until_error(stream):
    """Read in small pieces; return (bytes handed out, the error that stopped it)."""
    received = bytearray()
    with pytest.raises(TransferError) as raised:
        while True:
            block = stream.read1(4096)
            if not block:
                break
            received += block
    return bytes(received), raised.value


# ------------------------------------------------------------------------------------ well-behaved mirrors

def test_a_stream_hands_out_the_body_and_says_how_long_it_is(mirror):
    url = mirror.route("/f")
    with open_stream(url, limits=FAST, what="f.bin") as stream:
        assert (stream.status, stream.offset, stream.total, stream.url) == (200, 0, len(BODY), url)
        assert stream.headers["Content-Length"] == str(len(BODY)) and stream.readable()
        assert stream.read() == BODY and stream.bytes_read == len(BODY)
        assert stream.read() == b""
    assert stream.closed


def test_read_n_returns_exactly_n_bytes_and_readinto_fills_a_buffer(mirror):
    with open_stream(mirror.route("/f"), limits=FAST) as stream:
        assert stream.read(10) == BODY[:10]
        buffer = bytearray(100)
        filled = stream.readinto(buffer)
        assert 0 < filled <= 100 and bytes(buffer[:filled]) == BODY[10 : 10 + filled]
        assert stream.read(len(BODY)) == BODY[10 + filled :]  # fewer than asked only at the end


def test_an_offset_is_asked_for_with_range_and_the_data_starts_there(mirror):
    with open_stream(mirror.route("/f"), offset=1000, limits=FAST) as stream:
        assert (stream.status, stream.offset, stream.total) == (206, 1000, len(BODY))
        assert stream.read() == BODY[1000:]
    assert mirror.requests == [("/f", "bytes=1000-")]


def test_a_mirror_that_ignores_range_is_read_from_byte_zero(mirror):
    with open_stream(mirror.route("/f", "ignore-range"), offset=1000, expected_bytes=len(BODY), limits=FAST) as stream:
        assert (stream.status, stream.offset) == (200, 0)
        assert stream.read() == BODY


def test_file_urls_stream_from_the_offset(tmp_path):
    path = tmp_path / "a file+name.bin"
    path.write_bytes(BODY)
    with open_stream(path.as_uri(), offset=100, expected_bytes=len(BODY), limits=FAST) as stream:
        assert (stream.status, stream.offset, stream.total) == (None, 100, len(BODY))
        assert stream.read() == BODY[100:]


# ------------------------------------------------------------------------------------ mirrors that misbehave

def test_a_trickle_is_stopped_by_the_minimum_rate(mirror):
    url = mirror.route("/slow", "trickle")
    with open_stream(url, limits=FAST, what="slow.bin") as stream:
        received, err = _read_until_error(stream)
    assert err.kind == "stall" and err.transient and err.status == 200
    assert str(err).startswith(f"slow.bin from {url}: stalled: ")
    assert "below the minimum of 1000 B/s" in str(err) and "try again later or use another mirror" in str(err)
    assert 0 < len(received) < 50  # stopped long before the trickle would have ended


def test_silence_is_stopped_by_the_read_timeout(mirror):
    limits = Limits(read_timeout=0.3, min_rate=0)
    with open_stream(mirror.route("/quiet", "silent"), limits=limits) as stream:
        received, err = _read_until_error(stream)
    assert err.kind == "timeout" and err.transient and "no byte arrived for 0.3 s (read timeout)" in str(err)


def test_a_mirror_that_never_answers_is_stopped_by_the_connect_timeout(mirror):
    with pytest.raises(TransferError, match=r"no answer within 0\.3 s \(connect timeout\)") as raised:
        open_stream(mirror.route("/mute", "no-headers"), limits=Limits(connect_timeout=0.3))
    assert raised.value.kind == "connect" and raised.value.transient


def test_headers_trickling_in_are_stopped_by_the_connect_timeout(mirror):
    """The socket timeout bounds each wait for a byte; a byte every 0.1 s must not stretch the deadline."""
    with pytest.raises(TransferError, match=r"no answer within 0\.5 s \(connect timeout\)") as raised:
        open_stream(mirror.route("/h", "header-trickle"), limits=Limits(connect_timeout=0.5))
    assert raised.value.kind == "connect" and raised.value.transient


def test_a_chunk_header_trickling_in_is_stopped_by_the_read_timeout(mirror):
    """One read of a chunked body may read a whole chunk-size line: it too is bounded by read_timeout."""
    with open_stream(mirror.route("/c", "chunk-trickle"), limits=Limits(read_timeout=0.5, min_rate=0)) as stream:
        received, err = _read_until_error(stream)
    assert received == BODY
    assert err.kind == "timeout" and err.transient and "(read timeout)" in str(err)


def test_bytes_past_the_expected_size_are_never_handed_out(mirror):
    with open_stream(mirror.route("/big", "unannounced"), expected_bytes=1000, limits=FAST, what="big") as stream:
        received, err = _read_until_error(stream)
    assert err.kind == "cap" and not err.transient
    assert "more than 1000 bytes arrived (the expected size)" in str(err)
    assert received == BODY[: len(received)] and len(received) <= 1000


def test_an_endless_stream_stops_at_max_bytes(mirror):
    with open_stream(mirror.route("/endless", "endless"), max_bytes=300_000, limits=FAST) as stream:
        received, err = _read_until_error(stream)
    assert err.kind == "cap" and "more than 300000 bytes arrived (the cap max_bytes)" in str(err)
    assert len(received) <= 300_000


def test_an_announced_size_over_the_cap_fails_before_any_byte_is_read(mirror):
    with pytest.raises(TransferError, match=f"announces {len(BODY)} bytes, more than the cap max_bytes") as raised:
        open_stream(mirror.route("/f"), max_bytes=100, limits=FAST)
    assert raised.value.kind == "cap"


def test_a_connection_closed_early_is_a_transient_truncation(mirror):
    with open_stream(mirror.route("/cut", "close-early"), limits=FAST) as stream:
        received, err = _read_until_error(stream)
    assert received == BODY[:1000]
    assert err.kind == "truncated" and err.transient
    assert f"the connection closed at byte 1000 of the {len(BODY)} announced" in str(err)


def test_a_complete_answer_shorter_than_expected_is_a_different_file(mirror):
    with open_stream(mirror.route("/f"), expected_bytes=len(BODY) + 10, limits=FAST) as stream:
        received, err = _read_until_error(stream)
    assert received == BODY and err.kind == "size" and not err.transient
    assert f"ends at byte {len(BODY)}, but {len(BODY) + 10} bytes are expected" in str(err)


@pytest.mark.parametrize(("status", "transient"), [(404, False), (403, False), (429, True), (503, True)])
def test_http_errors_keep_their_status(mirror, status, transient):
    url = mirror.route("/e", f"status:{status}")
    with pytest.raises(TransferError, match=f"^e.bin from {url}: HTTP {status} ") as raised:
        open_stream(url, limits=FAST, what="e.bin")
    assert (raised.value.status, raised.value.transient, is_transient(raised.value)) == (status, transient, transient)


def test_an_offset_past_the_end_is_a_416(mirror, tmp_path):
    with pytest.raises(TransferError) as raised:
        open_stream(mirror.route("/f"), offset=len(BODY), limits=FAST)
    assert raised.value.status == 416
    path = tmp_path / "f.bin"
    path.write_bytes(BODY)
    with pytest.raises(TransferError, match="past the end") as raised:
        open_stream(path.as_uri(), offset=len(BODY))
    assert raised.value.status == 416


def test_file_urls_enforce_the_cap_and_name_a_missing_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(BODY)
    with pytest.raises(TransferError, match="announces") as raised:
        open_stream(path.as_uri(), expected_bytes=1000)
    assert raised.value.kind == "cap"
    with pytest.raises(TransferError, match="No such file or directory: .*missing.bin") as raised:
        open_stream((tmp_path / "missing.bin").as_uri(), what="m")
    assert not raised.value.transient


# ------------------------------------------------------------------------------------ retries

def test_with_retries_gets_past_a_503(mirror):
    url = mirror.route("/flaky", "flaky")
    lines = []
    body = with_retries(lambda: open_stream(url, limits=FAST).read(), FAST, "flaky", log=lines.append)
    assert body == BODY and len(mirror.requests) == 2
    assert len(lines) == 1 and "HTTP 503" in lines[0] and "retrying in 0.01 s (attempt 2 of 3)" in lines[0]


def test_with_retries_lists_every_attempt_when_all_fail(mirror):
    url = mirror.route("/down", "status:503")
    with pytest.raises(TransferError) as raised:
        with_retries(lambda: open_stream(url, limits=FAST, what="d.bin"), FAST, "d.bin")
    err = raised.value
    assert len(mirror.requests) == 3 and len(err.attempts) == 3 and err.status == 503
    assert str(err).startswith(f"d.bin from {url}: failed 3 times: 1) HTTP 503")
    assert "2) HTTP 503" in str(err) and "3) HTTP 503" in str(err) and "use another mirror" in str(err)


def test_with_retries_resumes_a_truncated_transfer(mirror):
    """The retry policy and Range together: each attempt continues where the last one broke off."""
    url = mirror.route("/cut", "close-early")
    received = bytearray()

    def attempt():
        with open_stream(url, offset=len(received), limits=FAST) as stream:
            while block := stream.read1(4096):
                received.extend(block)

    with pytest.raises(TransferError, match=r"failed 3 times: 1\) truncated"):
        with_retries(attempt, FAST, "cut")
    assert bytes(received) == BODY[:3000]
    assert [r for _, r in mirror.requests] == [None, "bytes=1000-", "bytes=2000-"]


def test_with_retries_raises_a_permanent_failure_at_once(mirror):
    url = mirror.route("/gone", "status:404")
    with pytest.raises(TransferError, match="HTTP 404"):
        with_retries(lambda: open_stream(url, limits=FAST), FAST, "gone")
    assert len(mirror.requests) == 1


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), True),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), False),
        (urllib.error.URLError(ConnectionRefusedError()), True),
        (urllib.error.HTTPError("u", 500, "boom", {}, None), True),
        (urllib.error.HTTPError("u", 404, "gone", {}, None), False),
        (ValueError("bad"), False),
        (FileNotFoundError(), False),
    ],
)
def test_is_transient_tells_retryable_failures_from_the_rest(error, transient):
    assert is_transient(error) is transient


# ------------------------------------------------------------------------------------ arguments, pickling

def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match=r"Limits\(read_timeout=0\): pass a number of seconds above 0"):
        Limits(read_timeout=0)
    with pytest.raises(ValueError, match=r"Limits\(retries=-1\)"):
        Limits(retries=-1)
    with pytest.raises(ValueError, match="reads http://, https:// or file:// URLs"):
        open_stream("ftp://example.org/x")
    with pytest.raises(ValueError, match=r"open_stream\(offset=-1\)"):
        open_stream("http://127.0.0.1:9/x", offset=-1)
    with pytest.raises(ValueError, match="lies past the expected size"):
        open_stream("http://127.0.0.1:9/x", offset=11, expected_bytes=10)


def test_a_transfer_error_survives_pickling():
    err = TransferError("HTTP 503 busy", what="w", url="http://m/x", kind="http", status=503, transient=True)
    copy = pickle.loads(pickle.dumps(err))
    assert (str(copy), copy.status, copy.kind, copy.transient) == (str(err), 503, "http", True)
