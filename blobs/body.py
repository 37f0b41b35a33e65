"""The body of a blob PUT, read into buffers the caller owns.

Under gunicorn, `wsgi.input` copies every piece of the body several times on its way
up (socket -> BytesIO -> bytes -> BytesIO -> slices); for a 1 GiB blob those copies
cost as much as hashing it. So when the request comes from gunicorn and nobody has
read its body yet, the body is read straight from the client socket with recv_into:
first whatever gunicorn already read past the headers, then the socket itself. When it
is done, gunicorn's length reader is told how much is left, so that on a kept-alive
connection gunicorn drains exactly the rest and finds the next request where it is.

Anything else (another WSGI server, Django's test client, a chunked body that
ChunkedBodyMiddleware already spooled) is read through `wsgi.input`.
"""

import contextlib


class _StreamBody:
    """The portable way: `read()` from the WSGI input and copy into the caller's buffer."""

    kind = "stream"

    def __init__(self, stream, length):
        self.stream = stream
        self.remaining = length

    def readinto(self, view):
        data = self.stream.read(min(len(view), self.remaining))
        n = len(data)
        view[:n] = data
        self.remaining -= n
        return n

    def close(self):
        pass


class _SocketBody:
    """The body straight from the socket under gunicorn. `readinto` returns 0 at the end
    of the body, or early when the client goes away."""

    kind = "socket"

    def __init__(self, sock, body, length):
        self.sock = sock
        self.body = body
        self.reader = body.reader
        self.remaining = length
        buffered = self.reader.unreader.take_buffered()
        if len(buffered) > length:
            # A pipelining client's next request: it stays with gunicorn.
            self.reader.unreader.unread(buffered[length:])
            buffered = buffered[:length]
        self.buffered = memoryview(buffered)

    def readinto(self, view):
        want = min(len(view), self.remaining)
        if want == 0:
            return 0
        if self.buffered:
            n = min(want, len(self.buffered))
            view[:n] = self.buffered[:n]
            self.buffered = self.buffered[n:]
        else:
            try:
                n = self.sock.recv_into(view[:want])
            except OSError:
                # Where the next request would start is unknown: gunicorn must close.
                self.body.failed = True
                return 0
        self.remaining -= n
        return n

    def close(self):
        # Whatever was not read is still on the socket (or in `buffered`): give it back
        # so that gunicorn drains it, and nothing more, before the next request.
        if self.buffered:
            self.reader.unreader.unread(bytes(self.buffered))
            self.buffered = memoryview(b"")
        self.reader.length = self.remaining


def _gunicorn_body(request, length):
    """gunicorn's Body for this request when it can be bypassed safely, else None."""
    environ = request.META
    sock = environ.get("gunicorn.socket")
    body = environ.get("wsgi.input")
    reader = getattr(body, "reader", None)
    if sock is None or type(body).__name__ != "Body" or type(reader).__name__ != "LengthReader":
        return None
    if getattr(request, "_read_started", False) or body.buf.tell() or reader.length != length:
        return None  # someone has already started reading it
    if not hasattr(reader.unreader, "take_buffered") or getattr(sock, "recv_into", None) is None:
        return None
    return body


@contextlib.contextmanager
def open_body(request, length):
    """A reader of the request's `length` body bytes with `readinto(memoryview) -> int`."""
    gunicorn_body = _gunicorn_body(request, length)
    if gunicorn_body is not None:
        reader = _SocketBody(request.META["gunicorn.socket"], gunicorn_body, length)
    else:
        reader = _StreamBody(request, length)
    try:
        yield reader
    finally:
        reader.close()
