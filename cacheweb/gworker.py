"""gunicorn's threaded worker, with no thread held by a client that is not sending.

The stock gthread worker hands a connection to a thread as soon as its first bytes
arrive; the thread then blocks reading the rest of the request head, as long as the
client likes. A few dozen clients that send half a request head (slowloris) so hold
every thread, and engines wait. This worker reads request heads in its event loop,
without a thread, and hands a connection to a thread only once its whole head has
arrived. A client that sends no byte for CACHEWEB_CLIENT_TIMEOUT seconds is closed,
whether it stalls in its head (in the loop) or later in its body (the socket's read
deadline, in the thread).

Bodies are read in threads as before (blobs/body.py reads PUT bodies straight from the
socket with recv_into); an unauthenticated request is refused from its head alone
(cacheweb/early.py), so only a client with a token or a signed URL can hold a thread
with a slow body, and only for CACHEWEB_CLIENT_TIMEOUT between bytes.
"""

import errno
import json
import socket
import time

from gunicorn.workers import gthread

from cacheweb.env import env_int

CLIENT_TIMEOUT = env_int("CACHEWEB_CLIENT_TIMEOUT", 30, minimum=1)
HEAD_END = b"\r\n\r\n"
READ_SIZE = 65536


LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 65536


class HeadFirstConn(gthread.TConn):
    def __init__(self, worker, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.worker = worker
        self.head = bytearray()
        self.lingered = 0

    def close(self, graceful=False):
        """gunicorn's graceful close lingers (up to 2 s) reading what the client still
        sends, in the event loop: a client that neither sends nor closes stalls every
        other connection meanwhile. Here the linger is left to the event loop."""
        if graceful:
            self.worker.linger(self)
        else:
            super().close()

    def init(self):
        super().init()
        if self.head:
            # What the event loop read: the request head (and any body bytes after it).
            self.parser.unreader.unread(bytes(self.head))
            self.head = bytearray()
        # A read deadline in the thread: a stalled body or reader frees it in time.
        self.sock.settimeout(CLIENT_TIMEOUT)


class _CapturedSocket:
    """Stands in for the client socket while gunicorn writes its HTML error page."""

    def __init__(self, sock):
        self._sock = sock
        self.written = b""

    def gettimeout(self):
        return 0.0

    def setblocking(self, flag):
        pass

    def sendall(self, data):
        self.written += bytes(data)

    def send(self, data):
        self.written += bytes(data)
        return len(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def json_error_response(status_line, message):
    body = json.dumps({"error": message}).encode()
    return (
        f"{status_line}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1") + body


class HeadFirstWorker(gthread.ThreadWorker):
    def handle_error(self, req, client, addr, exc):
        """What gunicorn refuses itself (a request line over its limit, a malformed
        header, a bad chunk): the same status, as JSON, since engines log the body of
        every refusal. gunicorn decides status and logging; only the body changes."""
        captured = _CapturedSocket(client)
        super().handle_error(req, captured, addr, exc)
        status_line = captured.written.split(b"\r\n", 1)[0].decode("latin-1")
        if not status_line.startswith("HTTP/"):
            return
        reason = status_line.split(" ", 2)[2] if status_line.count(" ") >= 2 else "error"
        detail = str(exc) if status_line.split(" ")[1].startswith("4") else ""
        try:
            gthread.util.write_nonblock(
                client, json_error_response(status_line, f"{reason}: {detail}" if detail else reason)
            )
        except Exception:
            self.log.debug("Failed to send error message.")

    def init_process(self):
        self.head_conns = set()
        self.lingering = set()
        super().init_process()

    def linger(self, conn):
        """Close `conn` as RFC 9112 section 9.6 asks (FIN, then read until the peer
        closes, so that unread request bytes do not turn into an RST that truncates
        the answer), without blocking the loop."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
            self.poller.register(conn.sock, gthread.selectors.EVENT_READ, lambda sock: self._drain(conn))
        except (OSError, KeyError, ValueError):
            gthread.util.close(conn.sock)
            return
        conn.timeout = time.monotonic() + LINGER_SECONDS
        self.lingering.add(conn)

    def _end_linger(self, conn):
        self.lingering.discard(conn)
        try:
            self.poller.unregister(conn.sock)
        except (OSError, KeyError, ValueError):
            pass
        gthread.util.close(conn.sock)

    def _drain(self, conn):
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.lingered += len(data)
        if not data or conn.lingered >= LINGER_MAX_BYTES:
            self._end_linger(conn)

    def _head_first(self):
        # TLS and HTTP/2 prior knowledge read the raw socket before the parser does.
        return not self.cfg.is_ssl and "h2" not in getattr(self.cfg, "http_protocols", ())

    def accept(self, listener):
        if not self._head_first():
            return super().accept(listener)
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = HeadFirstConn(self, self.cfg, client_sock, client_addr, listener.getsockname())
        self._await_head(conn)

    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection: its next request head is read in the loop too."""
        if not isinstance(conn, HeadFirstConn):
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_head(conn)

    def _await_head(self, conn):
        conn.sock.setblocking(False)
        conn.timeout = time.monotonic() + CLIENT_TIMEOUT
        self.head_conns.add(conn)
        self.poller.register(conn.sock, gthread.selectors.EVENT_READ, lambda sock: self._read_head(conn))

    def _drop(self, conn):
        self.head_conns.discard(conn)
        try:
            self.poller.unregister(conn.sock)
        except (OSError, KeyError, ValueError):
            pass
        self.nr_conns -= 1
        gthread.util.close(conn.sock)

    def _read_head(self, conn):
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)  # the client went away before finishing its head
            return
        start = max(0, len(conn.head) - len(HEAD_END) + 1)
        conn.head += data
        conn.timeout = time.monotonic() + CLIENT_TIMEOUT
        # A head past gunicorn's limits is handed on too: its parser refuses it.
        limit = self.cfg.limit_request_field_size * (self.cfg.limit_request_fields + 2) + 8192
        if conn.head.find(HEAD_END, start) < 0 and len(conn.head) <= limit:
            return
        self.head_conns.discard(conn)
        self.poller.unregister(conn.sock)
        conn.data_ready = True
        self.enqueue_req(conn)

    def murder_pending(self):
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c in self.head_conns if c.timeout <= now]:
            self._drop(conn)
        for conn in [c for c in self.lingering if c.timeout <= now]:
            self._end_linger(conn)
