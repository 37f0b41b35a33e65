"""HTTP Range for blob downloads, and a response that lets the server sendfile it.

The engine reads layers with `Range: bytes=<offset>-` and re-opens at a new offset
after a non-sequential read; it never checks the status code, so a Range we ignored
would corrupt the layer. Only single ranges are served as 206; anything else that is
not a valid single range is ignored as RFC 9110 allows (the full blob, 200).
"""

import re

from django.http import FileResponse, HttpResponse

# ASCII digits only, and few enough for any real offset: int() refuses some Unicode
# digits and very long numbers, and a Range we cannot read is ignored, not a 500.
RANGE_RE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")
BLOCK_SIZE = 1024 * 1024


class Unsatisfiable(Exception):
    pass


def parse_range(header, size):
    """(first, last) inclusive byte positions for a Range header on a `size`-byte blob,
    None to serve the whole blob, or Unsatisfiable."""
    if not header or size == 0:
        # An empty blob has no satisfiable range; answering 416 would hand the engine
        # our error text as layer content, since it does not check the status.
        return None
    match = RANGE_RE.fullmatch(header.strip())
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise Unsatisfiable()
        return max(0, size - suffix), size - 1
    first = int(first)
    if last and int(last) < first:
        return None
    if first >= size:
        raise Unsatisfiable()
    return first, min(int(last), size - 1) if last else size - 1


class _Window:
    """`length` bytes of an open file from `start`. read() stops at the window's end;
    fileno() lets gunicorn sendfile from the file's current offset for exactly
    Content-Length bytes, so the bytes never pass through Python.

    on_sent(n) is called once, at close, with the bytes that left: those read, or, after
    a sendfile, those socket.sendfile says it sent (it seeks the file to the offset it
    reached, also when the client went away midway)."""

    def __init__(self, file, start, length, on_sent=None):
        file.seek(start)
        self._file = file
        self._start = start
        self._length = length
        self._left = length
        self._reached = start
        self._on_sent = on_sent

    def read(self, size=-1):
        if self._left <= 0:
            return b""
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._file.read(size)
        self._left -= len(data)
        return data

    def seekable(self):
        # seek() is only there for socket.sendfile to report how far it got; Django's
        # FileResponse would otherwise read a seekable file through to measure it.
        return False

    def seek(self, offset, whence=0):
        position = self._file.seek(offset, whence)
        self._reached = max(self._reached, position)
        return position

    def fileno(self):
        return self._file.fileno()

    def sent(self):
        return min(self._length, max(self._length - self._left, self._reached - self._start))

    def close(self):
        self._file.close()
        on_sent, self._on_sent = self._on_sent, None
        if on_sent is not None:
            on_sent(self.sent())


def blob_response(file, size, range_header, method, etag, if_range=None, on_sent=None):
    """The response to GET or HEAD of an open blob file of `size` bytes. With If-Range,
    the Range is honoured only when it names this ETag (a blob has no Last-Modified,
    so a date never matches): a client resuming another object gets all of this one.
    on_sent(bytes) is called when a GET's body is done with (see _Window)."""
    if if_range is not None and if_range.strip() != etag:
        range_header = None
    try:
        window = parse_range(range_header, size)
    except Unsatisfiable:
        file.close()
        response = HttpResponse(
            b'{"error": "requested range not satisfiable"}', status=416, content_type="application/json"
        )
        response["Content-Range"] = f"bytes */{size}"
        return response
    first, last = window if window is not None else (0, size - 1)
    length = last - first + 1
    if method == "HEAD":
        file.close()
        response = HttpResponse(status=206 if window else 200, content_type="application/octet-stream")
    else:
        response = FileResponse(_Window(file, first, length, on_sent), content_type="application/octet-stream")
        response.block_size = BLOCK_SIZE
        if window:
            response.status_code = 206
    if window:
        response["Content-Range"] = f"bytes {first}-{last}/{size}"
    response["Content-Length"] = str(length)
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = etag
    # The bytes behind a digest never change.
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    return response
