"""blobs.body: reading a PUT body straight from gunicorn's socket, and handing back to
gunicorn exactly what was not read. Uses gunicorn's own reader classes over a real
socket pair, as its gthread worker builds them."""

import io
import socket
import threading
from types import SimpleNamespace

import pytest
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader

from blobs.body import open_body


def gunicorn_request(payload, length, already_buffered=b""):
    """A request as gunicorn hands it to the application: the client's bytes on a socket,
    `already_buffered` read past the headers into the unreader. Returns (request, Body,
    unreader, client socket)."""
    server, client = socket.socketpair()
    if payload:
        # From another thread: the payload can be larger than the socket buffers.
        threading.Thread(target=client.sendall, args=(payload,), daemon=True).start()
    unreader = SocketUnreader(server)
    unreader.unread(already_buffered)
    body = Body(LengthReader(unreader, length))
    request = SimpleNamespace(META={"gunicorn.socket": server, "wsgi.input": body}, _read_started=False)
    return request, body, unreader, client


def read_all(reader, step):
    out = bytearray()
    buffer = bytearray(step)
    while n := reader.readinto(memoryview(buffer)):
        out += buffer[:n]
    return bytes(out)


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_reads_buffered_then_socket_bytes_and_leaves_the_next_request(step):
    body_bytes = bytes(range(256)) * 40
    next_request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    head, rest = body_bytes[:300], body_bytes[300:]
    request, body, unreader, client = gunicorn_request(rest + next_request, len(body_bytes), head)
    with open_body(request, len(body_bytes)) as reader:
        assert reader.kind == "socket"
        assert read_all(reader, step) == body_bytes
    # gunicorn sees the body as consumed and finds the next request where it starts.
    assert body.read() == b""
    client.shutdown(socket.SHUT_WR)
    assert unreader.read(len(next_request)) == next_request
    client.close()


def test_a_pipelined_request_already_buffered_is_given_back():
    body_bytes = b"x" * 1000
    next_request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    request, body, unreader, client = gunicorn_request(b"", len(body_bytes), body_bytes + next_request)
    with open_body(request, len(body_bytes)) as reader:
        assert read_all(reader, 333) == body_bytes
    client.close()
    assert body.read() == b""
    assert unreader.read(len(next_request)) == next_request


def test_unread_rest_of_the_body_is_left_for_gunicorn_to_drain():
    body_bytes = bytes(range(200)) * 50
    next_request = b"GET /next HTTP/1.1\r\n\r\n"
    request, body, unreader, client = gunicorn_request(body_bytes[100:] + next_request, len(body_bytes), body_bytes[:100])
    with open_body(request, len(body_bytes)) as reader:
        view = memoryview(bytearray(150))
        assert reader.readinto(view) == 100  # what gunicorn had buffered comes first
        assert reader.readinto(view[:20]) == 20
    # Rejected after 120 bytes: gunicorn drains exactly the other bytes of the body.
    assert body.read() == body_bytes[120:]
    assert unreader.read(len(next_request)) == next_request
    client.close()


def test_client_gone_early_ends_the_body_with_what_was_sent():
    request, body, unreader, client = gunicorn_request(b"", 10_000, b"abc")
    client.close()
    with open_body(request, 10_000) as reader:
        data = read_all(reader, 4096)
    assert data == b"abc"
    assert reader.remaining == 10_000 - 3


def test_socket_error_marks_the_connection_unusable():
    server, client = socket.socketpair()
    unreader = SocketUnreader(server)
    body = Body(LengthReader(unreader, 100))
    request = SimpleNamespace(META={"gunicorn.socket": server, "wsgi.input": body}, _read_started=False)
    client.close()
    server.close()  # recv_into on a closed socket raises OSError
    with open_body(request, 100) as reader:
        assert reader.readinto(memoryview(bytearray(10))) == 0
    assert body.failed is True


def test_a_body_gunicorn_has_started_reading_goes_through_wsgi_input():
    body_bytes = b"0123456789" * 10
    request, body, unreader, client = gunicorn_request(body_bytes, len(body_bytes))
    request.META["wsgi.input"] = body
    first = body.read(5)
    # Body.read keeps what it read ahead in its own buffer: the socket path would skip it.
    request.read = body.read
    with open_body(request, len(body_bytes) - 5) as reader:
        assert reader.kind == "stream"
        assert read_all(reader, 7) == body_bytes[5:]
    assert first == body_bytes[:5]
    client.close()


def test_other_servers_go_through_wsgi_input():
    stream = io.BytesIO(b"hello world")
    request = SimpleNamespace(META={"wsgi.input": stream}, read=stream.read, _read_started=False)
    with open_body(request, 11) as reader:
        assert reader.kind == "stream"
        assert read_all(reader, 4) == b"hello world"
