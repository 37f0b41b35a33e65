"""Slow clients cannot starve engines: through gunicorn as bin/run configures it (one
worker here, 8 threads), many more stalled connections than threads, and engines are
still answered; a stalled client is closed after CACHEWEB_CLIENT_TIMEOUT."""

import json
import socket
import time

import pytest

from tests.support import LiveService, basic, chunked_request

pytestmark = pytest.mark.django_db(transaction=True)

STALLED = 60  # per kind; the worker has 8 threads


def open_stalled(service, payload):
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=30)
    sock.sendall(payload)
    return sock


def stalled_kinds(service, org):
    host = f"Host: 127.0.0.1:{service.port}\r\n"
    return {
        "half-head": f"GET /magicache/config HTTP/1.1\r\n{host}Authorization: Ba".encode(),
        "half-chunked-body": (
            f"GET /magicache/config HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n"
            "Content-Type: application/json\r\n\r\n100\r\n{\"Eng"
        ).encode(),
        "half-blob-put": (
            f"PUT /blobs/{org.pk}/sha256:{'a' * 64}?expires=9999999999&sig=00 HTTP/1.1\r\n{host}"
            "Content-Length: 1000000\r\n\r\n"
        ).encode() + b"x" * 1000,
    }


def config_call(service, token):
    raw = json.dumps({"EngineID": "engine-1"}).encode() + b"\n"
    started = time.monotonic()
    status, _, body = chunked_request(
        service.url, "GET", "/magicache/config",
        {"Authorization": basic(token), "Content-Type": "application/json"}, [raw[:1], raw[1:]],
    )
    assert status == 200, body
    return time.monotonic() - started


def test_engines_are_served_past_many_stalled_clients(org, token):
    service = LiveService(CACHEWEB_CLIENT_TIMEOUT=600)
    sockets = []
    try:
        for payload in stalled_kinds(service, org).values():
            sockets += [open_stalled(service, payload) for _ in range(STALLED)]
        # Every stalled connection was accepted and is waiting (or refused, for the
        # unauthenticated bodies): a request now must not queue behind them.
        latencies = [config_call(service, token) for _ in range(20)]
    finally:
        for sock in sockets:
            sock.close()
        service.stop()
    assert max(latencies) < 2.0, latencies


def test_stalled_clients_are_closed_after_the_client_timeout(org, token):
    service = LiveService(CACHEWEB_CLIENT_TIMEOUT=2)
    try:
        host = f"Host: 127.0.0.1:{service.port}\r\n"
        half_head = open_stalled(service, f"GET /magicache/config HTTP/1.1\r\n{host}X-A".encode())
        # An authenticated body that stops: its thread's read deadline frees it.
        half_body = open_stalled(service, (
            f"GET /magicache/config HTTP/1.1\r\n{host}Authorization: {basic(token)}\r\n"
            "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n100\r\n{\"Eng"
        ).encode())
        for sock in (half_head, half_body):
            started = time.monotonic()
            data = b""
            while part := sock.recv(65536):  # the socket's 30 s timeout fails the test
                data += part
            waited = time.monotonic() - started
            assert waited < 10, waited
            assert not data or data.startswith(b"HTTP/1.1 4"), data[:200]
            sock.close()
        # The service is fine afterwards.
        config_call(service, token)
    finally:
        service.stop()
