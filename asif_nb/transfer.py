"""Network transfers that cannot hang: every byte the suite downloads goes through here.

``open_stream(url, ...)`` opens an http(s) or ``file://`` URL as a binary file-like ``Stream`` that enforces
``Limits``: a deadline to connect, a deadline for each read, a minimum average rate once a grace period has
passed, and a byte cap. A mirror that trickles, stops, sends too much or closes early raises ``TransferError``
(an ``OSError``) whose message names what was being fetched, the URL and what happened. ``is_transient`` tells
the failures worth retrying from the rest, and ``with_retries`` is the one retry policy (exponential backoff)
every caller shares. (Tools whose transfer we cannot drive, like gdown, are held to the same ``Limits`` by
``asif_nb.clients.run_watched``.)
"""
from __future__ import annotations

import contextlib
import email.message
import functools
import http.client
import io
import mimetypes
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable, TypeVar

_CHUNK = 1 << 20
_OVERLOADED = "the mirror may be overloaded: try again later or use another mirror"
T = TypeVar("T")


class TransferError(OSError):
    """A transfer failed or broke a limit. ``str(err)`` is ``"<what> from <url>: <summary>[; <advice>]"``.

    Attributes: ``what``, ``url``, ``summary`` (what happened, short), ``advice``, ``kind`` (one of ``connect``
    (no connection, no answer in time, or the connection broke), ``timeout`` (a read waited too long), ``stall``
    (below the minimum rate), ``cap``, ``truncated``, ``size``, ``http``, ``range``, ``io``), ``status`` (the HTTP
    status, else ``None``), ``transient`` (worth retrying) and ``attempts`` (the summaries of every attempt when
    ``with_retries`` gave up).
    """

    def __init__(self, summary: str, *, what: str, url: str, kind: str, status: int | None = None,
                 transient: bool = False, advice: str = "", attempts: tuple[str, ...] = ()):
        self.summary, self.what, self.url, self.kind = summary, what, url, kind
        self.status, self.transient, self.advice = status, transient, advice
        self.attempts = attempts or (summary,)
        super().__init__(f"{what} from {url}: {summary}" + (f"; {advice}" if advice else ""))

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):  # keyword-only fields: pickle (multiprocessing) needs to be told how to rebuild
        fields = dict(what=self.what, url=self.url, kind=self.kind, status=self.status, transient=self.transient,
                      advice=self.advice, attempts=self.attempts)
        return _rebuild, (type(self), self.summary, fields)


def _rebuild(cls, summary, fields):
    return cls(summary, **fields)


@dataclass(frozen=True)
class Limits:
    """How long and how slowly a transfer may go on, and how often a transient failure is retried."""

    connect_timeout: float = 15.0  # seconds to connect and receive the response headers (redirects included)
    read_timeout: float = 60.0  # seconds one read may take (one wait for bytes)
    min_rate: float = 20_000.0  # bytes/s, averaged over the time spent waiting on the mirror, after `grace`
    grace: float = 30.0  # seconds of waiting before min_rate applies
    retries: int = 3  # extra attempts for transient failures (with_retries)
    backoff: float = 2.0  # first retry wait in seconds, doubled each time

    def __post_init__(self):
        for name in ("connect_timeout", "read_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits({name}={getattr(self, name)!r}): pass a number of seconds above 0.")
        for name in ("min_rate", "grace", "backoff"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"Limits({name}={getattr(self, name)!r}): pass a number >= 0 (0 turns it off).")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"Limits(retries={self.retries!r}): pass a whole number >= 0.")


# --------------------------------------------------------------------------------------------- the stream

class Stream(io.RawIOBase):
    """A response body read under ``Limits``; made by ``open_stream``.

    ``status`` (HTTP status, ``None`` for ``file://``), ``headers``, ``url`` (as requested), ``offset`` (the byte
    the data really starts at: 0 when a server ignored ``Range``), ``total`` (the expected end: ``expected_bytes``,
    else Content-Length + offset, else ``None``), ``bytes_read`` (bytes handed out so far), ``position``
    (``offset + bytes_read``).

    ``read1(n)`` and ``readinto(b)`` make one bounded wait on the mirror and may return fewer bytes; ``read(n)``
    returns exactly ``n`` bytes unless the stream ends (``read()``/``read(-1)``: everything). Each underlying
    read takes at most ``read_timeout`` (a watchdog shuts the socket under one that would go on, e.g. a chunk
    header trickling in), so a trickling mirror is caught by the rate check between reads.
    """

    def __init__(self, source, *, url: str, what: str, status, headers, offset: int, total: int | None,
                 announced_end: int | None, cap: int | None, cap_reason: str, limits: Limits, waited: float,
                 watchdog: _Watchdog | None = None):
        super().__init__()
        self._source, self.url, self.what, self.status, self.headers = source, url, what, status, headers
        self._watchdog = watchdog
        self.offset, self.total, self.bytes_read = offset, total, 0
        self._announced_end, self._cap, self._cap_reason, self._limits = announced_end, cap, cap_reason, limits
        self._waited, self._eof = waited, False

    @property
    def position(self) -> int:
        return self.offset + self.bytes_read

    def readable(self) -> bool:
        return True

    def read1(self, n: int = -1) -> bytes:
        self._checkClosed()
        if self._eof or n == 0:
            return b""
        want = _CHUNK if n is None or n < 0 else min(n, _CHUNK)
        if self._cap is not None:
            want = min(want, max(self._cap - self.position, 0) + 1)  # one byte past the cap reveals a violation
        started = time.monotonic()
        try:
            with self._watchdog.armed(self._limits.read_timeout) if self._watchdog else _NO_WATCHDOG:
                data = self._source.read1(want)
        except (TimeoutError, OSError, http.client.HTTPException) as err:
            if isinstance(err, TimeoutError) or (self._watchdog and self._watchdog.fired):
                raise self._timeout() from None
            raise self._error("connect", f"the connection broke after {self.position} bytes "
                              f"({type(err).__name__}: {err})", transient=True) from None
        if self._watchdog and self._watchdog.fired:  # the socket was shut under a read that would not end
            raise self._timeout()
        self._waited += time.monotonic() - started
        if not data:
            self._eof = True
            self._check_complete()
            return b""
        if self._cap is not None and self.position + len(data) > self._cap:
            self.close()
            raise self._error("cap", f"more than {self._cap} bytes arrived ({self._cap_reason}): the mirror serves "
                              "a different or endless file", advice="report it or use another mirror")
        self.bytes_read += len(data)
        self._check_rate()
        return data

    def readinto(self, buffer) -> int:
        data = self.read1(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def read(self, n: int = -1) -> bytes:
        parts, size = [], 0
        while n is None or n < 0 or size < n:
            data = self.read1(-1 if n is None or n < 0 else n - size)
            if not data:
                break
            parts.append(data)
            size += len(data)
        return b"".join(parts)

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        if not self.closed:
            try:
                if self._watchdog:
                    self._watchdog.stop()
                self._source.close()
            finally:
                super().close()

    def _timeout(self) -> TransferError:
        return self._error("timeout", f"no byte arrived for {self._limits.read_timeout:g} s (read timeout) after "
                           f"{self.position} bytes", transient=True, advice=_OVERLOADED)

    def _check_rate(self) -> None:
        limits = self._limits
        if limits.min_rate and self._waited > limits.grace and self.bytes_read / self._waited < limits.min_rate:
            self.close()
            raise self._error("stall", f"stalled: {self.bytes_read} bytes in {self._waited:.1f} s, below the minimum "
                              f"of {limits.min_rate:g} B/s", transient=True, advice=_OVERLOADED)

    def _check_complete(self) -> None:
        if self._announced_end is not None and self.position < self._announced_end:
            raise self._error("truncated", f"truncated: the connection closed at byte {self.position} of the "
                              f"{self._announced_end} announced", transient=True, advice=_OVERLOADED)
        if self.total is not None and self.position < self.total:
            if self._announced_end is not None:  # the mirror finished its answer: it holds a shorter file
                raise self._error("size", f"the mirror's file ends at byte {self.position}, but {self.total} bytes "
                                  "are expected: it serves a different file")
            raise self._error("truncated", f"truncated: the connection closed at byte {self.position} of the "
                              f"{self.total} expected", transient=True, advice=_OVERLOADED)

    def _error(self, kind: str, summary: str, **fields) -> TransferError:
        return TransferError(summary, what=self.what, url=self.url, kind=kind, status=self.status, **fields)


def open_stream(url: str, *, offset: int = 0, expected_bytes: int | None = None, max_bytes: int | None = None,
                limits: Limits | None = None, headers: dict | None = None, what: str | None = None) -> Stream:
    """Open ``url`` (http, https or file) from byte ``offset`` as a ``Stream`` read under ``limits``.

    ``expected_bytes`` is the file's full size when known: reading past it, or an answer announcing more, raises
    ``TransferError`` (kind ``cap``), and an end before it raises ``truncated`` (the connection broke: transient) or
    ``size`` (the mirror's answer was complete but shorter: a different file). ``max_bytes`` caps the file's size
    (counted from byte 0, like ``expected_bytes``) when the exact size is unknown. ``headers`` are added to the
    request; ``what`` names the download in messages. HTTP errors raise ``TransferError`` with ``status`` set
    (416 when ``offset`` is at or past the end of the file).
    """
    limits = limits if limits is not None else Limits()
    what = what or "download"
    for name, value in (("offset", offset), ("expected_bytes", expected_bytes), ("max_bytes", max_bytes)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"open_stream({name}={value!r}): pass a whole number of bytes >= 0.")
    caps = [(c, r) for c, r in ((expected_bytes, "the expected size"), (max_bytes, "the cap max_bytes"))
            if c is not None]
    cap, cap_reason = min(caps, key=lambda c: c[0]) if caps else (None, "")  # a tie names the expected size
    if cap is not None and offset > cap:
        raise ValueError(f"open_stream(offset={offset}) lies past {cap_reason} ({cap} bytes): start from 0.")
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    opener = {"http": _open_http, "https": _open_http, "file": _open_file}.get(scheme)
    if opener is None:
        raise ValueError(f"url={url!r}: open_stream reads http://, https:// or file:// URLs.")
    started = time.monotonic()
    source, status, response_headers, start, announced_length, watchdog = opener(url, offset, limits, headers or {},
                                                                                  what)
    announced_end = start + announced_length if announced_length is not None else None
    total = expected_bytes if expected_bytes is not None else announced_end
    stream = Stream(source, url=url, what=what, status=status, headers=response_headers, offset=start, total=total,
                    announced_end=announced_end, cap=cap, cap_reason=cap_reason, limits=limits,
                    waited=time.monotonic() - started, watchdog=watchdog)
    if cap is not None and announced_end is not None and announced_end > cap:
        stream.close()
        raise stream._error("cap", f"the mirror announces {announced_end} bytes, more than {cap_reason} ({cap} "
                            "bytes): it serves a different file", advice="report it or use another mirror")
    return stream


def _open_http(url, offset, limits, headers, what):
    request = urllib.request.Request(url, headers={"User-Agent": "asif_nb", **headers})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    watchdog = _Watchdog()
    opener = urllib.request.build_opener(_HTTPHandler(watchdog), _HTTPSHandler(watchdog))
    try:
        # The socket timeout bounds each wait for a byte; the watchdog bounds the whole exchange (connecting,
        # redirects, headers), so headers trickling in a byte at a time cannot stretch it.
        with watchdog.armed(limits.connect_timeout):
            response = opener.open(request, timeout=limits.connect_timeout)
    except urllib.error.HTTPError as err:
        watchdog.stop()
        err.close()
        transient = _transient_status(err.code)
        advice = _OVERLOADED if transient else ("the file is not there: the mirror moved or removed it"
                                                if err.code in (404, 410) else "")
        raise TransferError(f"HTTP {err.code} {err.reason}", what=what, url=url, kind="http", status=err.code,
                            transient=transient, advice=advice) from None
    except (OSError, http.client.HTTPException, ValueError) as err:
        watchdog.stop()
        reason = err.reason if isinstance(err, urllib.error.URLError) and isinstance(err.reason, BaseException) else err
        if isinstance(reason, TimeoutError) or watchdog.fired:
            summary = f"no answer within {limits.connect_timeout:g} s (connect timeout)"
        else:
            summary = f"could not connect ({type(reason).__name__}: {reason})"
        raise TransferError(summary, what=what, url=url, kind="connect",
                            transient=watchdog.fired or is_transient(reason)) from None
    if watchdog.fired:  # shut down just as the answer came: the connection is unusable
        response.close()
        watchdog.stop()
        raise TransferError(f"no answer within {limits.connect_timeout:g} s (connect timeout)", what=what, url=url,
                            kind="connect", transient=True)
    _set_read_timeout(response, limits.read_timeout)
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.strip().isdigit() else None
    start = 0
    if offset and response.status == 206:
        match = re.match(r"\s*bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
        start = int(match.group(1)) if match else offset
        if start != offset:
            response.close()
            watchdog.stop()
            raise TransferError(f"asked for bytes from {offset}, the mirror answered from byte {start}", what=what,
                                url=url, kind="range", status=206)
    return response, response.status, response.headers, start, length, watchdog


def _set_read_timeout(response, seconds: float) -> None:
    """urlopen's timeout covered connecting; from now on each read may wait ``read_timeout``."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _open_file(url, offset, limits, headers, what):
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"url={url!r}: a file:// URL must name a local path (file:///path).")
    path = urllib.request.url2pathname(parts.path)
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise TransferError(f"{err.strerror or err}: {path}", what=what, url=url, kind="io") from None
    size = os.fstat(handle.fileno()).st_size
    if offset and offset >= size:
        handle.close()
        raise TransferError(f"byte {offset} is at or past the end of the {size}-byte file", what=what, url=url,
                            kind="range", status=416)
    handle.seek(offset)
    message = email.message.Message()
    message["Content-Type"] = mimetypes.guess_type(path)[0] or "application/octet-stream"
    message["Content-Length"] = str(size - offset)
    return handle, None, message, offset, size - offset, None


class _Watchdog:
    """Shuts down the sockets of one transfer when a blocking call on them outlives its budget.

    ``armed(seconds)`` wraps one call; one daemon thread per transfer waits for the deadline and is ended by
    ``stop()``. After it fired, ``fired`` is true and every read on the sockets ends at once.
    """

    def __init__(self):
        self.sockets: list[socket.socket] = []
        self.fired = False
        self._deadline: float | None = None
        self._stopped = False
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def armed(self, seconds: float):
        with self._condition:
            self._deadline = time.monotonic() + seconds
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="asif_nb-transfer-watchdog", daemon=True)
                self._thread.start()
            self._condition.notify()
        try:
            yield
        finally:
            with self._condition:
                self._deadline = None

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify()

    def _run(self) -> None:
        with self._condition:
            while not self._stopped:
                if self._deadline is None:
                    self._condition.wait()
                elif time.monotonic() < self._deadline:
                    self._condition.wait(self._deadline - time.monotonic())
                else:
                    self.fired, self._deadline = True, None
                    for sock in self.sockets:
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)


_NO_WATCHDOG = contextlib.nullcontext()


class _WatchedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, watchdog: _Watchdog, **kwargs):
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self):
        super().connect()
        self._watchdog.sockets.append(self.sock)


class _WatchedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, watchdog: _Watchdog, **kwargs):
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self):
        super().connect()
        self._watchdog.sockets.append(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: _Watchdog):
        super().__init__()
        self._watchdog = watchdog

    def http_open(self, req):
        return self.do_open(functools.partial(_WatchedHTTPConnection, watchdog=self._watchdog), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: _Watchdog):
        super().__init__()
        self._watchdog = watchdog

    def https_open(self, req):
        return self.do_open(functools.partial(_WatchedHTTPSConnection, watchdog=self._watchdog), req,
                            context=self._context)


# --------------------------------------------------------------------------------------------- retries

def _transient_status(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def is_transient(err: BaseException) -> bool:
    """True for failures a later attempt may not meet: connection errors, timeouts, stalls, truncation,
    HTTP 5xx/408/429. False for the rest (404, a cap broken, a file of the wrong size, a bad certificate)."""
    if isinstance(err, TransferError):
        return err.transient
    if isinstance(err, urllib.error.HTTPError):
        return _transient_status(err.code)
    if isinstance(err, urllib.error.URLError):
        return isinstance(err.reason, BaseException) and is_transient(err.reason)
    if isinstance(err, socket.gaierror):
        return err.errno == getattr(socket, "EAI_AGAIN", None)  # "temporary failure in name resolution"
    if isinstance(err, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return True
    return isinstance(err, (TimeoutError, ConnectionError, http.client.IncompleteRead,
                            http.client.RemoteDisconnected))


def with_retries(fn: Callable[[], T], limits: Limits | None = None, what: str | None = None, *,
                 log: Callable[[str], None] | None = None) -> T:
    """Call ``fn()``; on a transient failure wait ``backoff``, ``2·backoff``, ... and call it again, at most
    ``limits.retries`` more times. A failure that is not transient is raised at once. When every attempt failed,
    a ``TransferError`` listing each attempt is raised from the last one. ``log`` receives a line per retry."""
    limits = limits if limits is not None else Limits()
    failures: list[BaseException] = []
    for attempt in range(limits.retries + 1):
        try:
            return fn()
        except Exception as err:
            if not is_transient(err):
                raise
            failures.append(err)
            if attempt == limits.retries:
                break
            wait = limits.backoff * 2 ** attempt
            if log is not None:
                log(f"{_short(err)}: retrying in {wait:g} s (attempt {attempt + 2} of {limits.retries + 1})")
            time.sleep(wait)
    last = failures[-1]
    if len(failures) == 1:
        raise last
    summaries = tuple(_short(err) for err in failures)
    listed = "; ".join(f"{i}) {summary}" for i, summary in enumerate(summaries, 1))
    fields = dict(what=what or "download", url="(unknown URL)", kind="io", status=None, advice="")
    if isinstance(last, TransferError):
        fields.update(what=last.what, url=last.url, kind=last.kind, status=last.status, advice=last.advice)
    raise TransferError(f"failed {len(failures)} times: {listed}", transient=True, attempts=summaries,
                        **fields) from last


def _short(err: BaseException) -> str:
    return err.summary if isinstance(err, TransferError) else f"{type(err).__name__}: {err}"
