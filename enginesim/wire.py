"""An HTTP client that puts on the wire what the engine's Go client does.

API calls (engine/cache/service.go): the JSON body goes through an io.Pipe, so Go sends it
chunked with no Content-Length (its transport first probes the body with a one-byte read,
hence a one-byte first chunk); Basic auth with the token as user and an empty password;
`Content-Type: application/json` on every call with a body; `Accept-Encoding: gzip` added by
the transport; anything but 200 is an error. Blob PUTs carry Content-Length and every header
the service returned. Blob GETs send only `Range: bytes=N-` (Go then adds no Accept-Encoding)
and the engine never looks at their status.
"""

import base64
import gzip
import http.client
import json
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from enginesim import gojson

USER_AGENT = "Go-http-client/1.1"
# io.Copy's buffer: the size of the chunks after the first probe byte.
COPY_CHUNK = 32 * 1024
# containerd's content copy reads a layer in 1 MiB pieces.
READ_CHUNK = 1024 * 1024
TIMEOUT = 60
MAX_REDIRECTS = 10


class ProtocolError(Exception):
    """The service answered something the engine would reject or misread."""


@dataclass
class CallLog:
    """Latency and byte counts per endpoint, shared by the threads of one run."""

    latencies: dict = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    errors: int = 0
    budget: int | None = None  # most requests the run may send (a load run must stay bounded)
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reserve(self):
        with self.lock:
            if self.budget is not None and self.sent >= self.budget:
                raise ProtocolError(f"request budget of {self.budget} exhausted; stopping")
            self.sent += 1

    def add(self, name, seconds, up=0, down=0, error=False):
        with self.lock:
            self.latencies.setdefault(name, []).append(seconds)
            self.bytes_up += up
            self.bytes_down += down
            self.errors += bool(error)


class GoHTTPClient:
    """One engine's HTTP client: keep-alive connections reused per host, like Go's transport."""

    def __init__(self, base_url, token, log: CallLog):
        # The engine appends "/name" to the URL as given; a trailing slash would double it.
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.log = log
        self._conns = {}

    # --- the eight API calls share one shape -------------------------------------------

    def api(self, method, name, body=None, *, has_body=True, decode=True):
        """Call BASE + "/" + name like service.go and return the decoded JSON (or None)."""
        url = f"{self.base_url}/{name}"
        headers = {"User-Agent": USER_AGENT}
        if self.token:
            raw = base64.b64encode(f"{self.token}:".encode()).decode()
            headers["Authorization"] = f"Basic {raw}"
        payload = None
        if has_body:
            headers["Content-Type"] = "application/json"
            payload = gojson.encode(body)
        headers["Accept-Encoding"] = "gzip"
        started = time.monotonic()
        try:
            status, resp_headers, data = self._send(method, url, headers, payload, chunked=has_body)
        except (OSError, http.client.HTTPException) as exc:
            self.log.add(name, time.monotonic() - started, error=True)
            raise ProtocolError(f"{method} /{name}: transport error: {exc}") from exc
        up = len(payload or b"")
        self.log.add(name, time.monotonic() - started, up=up, down=len(data), error=status != 200)
        if resp_headers.get("content-encoding", "").lower() == "gzip":
            data = gzip.decompress(data)
        if status != 200:
            raise ProtocolError(f"{method} /{name}: status {status} (the engine requires 200): {data[:300]!r}")
        if not decode:
            return None
        if not data.strip():
            raise ProtocolError(f"{method} /{name}: empty body (Go's decoder fails with EOF)")
        try:
            return _go_decode(data)
        except ValueError as exc:
            raise ProtocolError(f"{method} /{name}: body is not JSON: {exc}: {data[:200]!r}") from exc

    # --- blobs ---------------------------------------------------------------------------

    def put_blob(self, name, url, data, headers, *, exact_200):
        """PUT with Content-Length and each returned header set (Go canonicalizes names)."""
        req_headers = {"User-Agent": USER_AGENT, "Content-Length": str(len(data))}
        for key, value in (headers or {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ProtocolError(f"{name}: Headers must map strings to strings, got {key!r}: {value!r}")
            if key.lower() == "host":
                continue  # Go's client ignores a Host header; the URL decides.
            req_headers[_canonical(key)] = value
        req_headers["Accept-Encoding"] = "gzip"
        started = time.monotonic()
        try:
            status, _, body = self._send("PUT", url, req_headers, data, chunked=False)
        except (OSError, http.client.HTTPException) as exc:
            self.log.add(name, time.monotonic() - started, error=True)
            raise ProtocolError(f"PUT {name}: transport error: {exc}") from exc
        ok = status == 200 if exact_200 else 200 <= status < 300
        self.log.add(name, time.monotonic() - started, up=len(data), down=len(body), error=not ok)
        if not ok:
            need = "exactly 200" if exact_200 else "2xx"
            raise ProtocolError(f"PUT {name}: status {status} ({need} required): {body[:300]!r}")
        return status

    def range_reader(self, name, url, size):
        return RangeReader(self, name, url, size)

    def _open_range(self, url, offset):
        """One `GET url` with `Range: bytes=offset-`, following redirects like Go."""
        for _ in range(MAX_REDIRECTS):
            self.log.reserve()
            headers = {"User-Agent": USER_AGENT, "Range": f"bytes={offset}-"}
            conn, path = self._conn_for(url, fresh=True)
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                resp.read()
                url = urllib.parse.urljoin(url, resp.getheader("Location"))
                continue
            return resp, conn
        raise ProtocolError(f"too many redirects for {url}")

    # --- plumbing ------------------------------------------------------------------------

    def _conn_for(self, url, fresh=False):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ProtocolError(f"unsupported URL scheme in {url!r}")
        key = (parts.scheme, parts.hostname, parts.port)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        if fresh:
            return self._new_conn(parts), path
        conn = self._conns.get(key)
        if conn is None:
            conn = self._conns[key] = self._new_conn(parts)
        return conn, path

    @staticmethod
    def _new_conn(parts):
        cls = _GoHTTPSConnection if parts.scheme == "https" else _GoHTTPConnection
        return cls(parts.hostname, parts.port, timeout=TIMEOUT)

    def _send(self, method, url, headers, payload, *, chunked):
        self.log.reserve()
        for attempt in (0, 1):
            conn, path = self._conn_for(url)
            reused = conn.sock is not None
            try:
                if chunked:
                    # Passing an iterable makes http.client add Transfer-Encoding: chunked
                    # and write one chunk per item, with no Content-Length.
                    body = _go_chunks(payload)
                    conn.request(method, path, body=body, headers=headers, encode_chunked=True)
                else:
                    conn.request(method, path, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                # Go retries a request on a reused keep-alive connection the server had closed.
                if attempt or not reused:
                    raise
            except Exception:
                conn.close()
                raise

    def close(self):
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


class RangeReader:
    """engine/cache/provider.go urlReaderAt: open at the first offset asked, read on
    sequentially, re-open with a new `Range: bytes=N-` on any other offset."""

    def __init__(self, client, name, url, size):
        self.client = client
        self.name = name
        self.url = url
        self.size = size
        self._resp = None
        self._conn = None
        self.offset = 0
        self.opens = []

    def read_at(self, length, offset):
        if self._resp is None or offset != self.offset:
            started = time.monotonic()
            resp, conn = self.client._open_range(self.url, offset)
            self.client.log.add(self.name, time.monotonic() - started)
            self.close()
            self._resp, self._conn = resp, conn
            self.offset = offset
            self.opens.append((offset, resp.status, resp.getheader("Content-Range")))
        data = self._resp.read(length)
        self.offset += len(data)
        with self.client.log.lock:
            self.client.log.bytes_down += len(data)
        return data

    def close(self):
        if self._resp is not None:
            self._resp.close()
            self._conn.close()
        self._resp = self._conn = None


class _GoHTTPConnection(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        # Go's net package sets TCP_NODELAY on every TCP connection; without it the small
        # chunk writes meet Nagle's algorithm and every call looks 40 ms slower than it is.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _GoHTTPSConnection(http.client.HTTPSConnection):
    def connect(self):
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _go_chunks(payload):
    yield payload[:1]
    for start in range(1, len(payload), COPY_CHUNK):
        yield payload[start : start + COPY_CHUNK]


def _canonical(key):
    """textproto.CanonicalMIMEHeaderKey for the usual token characters."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in key.split("-"))


def _go_decode(data):
    """json.Decoder.Decode: the first JSON value of the body; whatever follows is never read."""
    text = data.decode("utf-8", errors="replace").lstrip(" \t\r\n")

    def no_constants(name):
        raise ValueError(f"{name} is not valid JSON")

    value, _ = json.JSONDecoder(parse_constant=no_constants).raw_decode(text)
    return value
