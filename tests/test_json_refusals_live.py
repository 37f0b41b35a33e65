"""Every refusal on an engine or blob path is JSON, through gunicorn: engines log the
body of any answer outside 200-299, and an HTML page there helps nobody."""

import json
import socket
import urllib.parse

import pytest

from blobs import signing
from tests.support import _dechunk, basic


@pytest.fixture
def live_service(module_live_service, transactional_db):
    """The module's one server (tests/conftest.py): these tests only read its answers."""
    return module_live_service


pytestmark = pytest.mark.django_db(transaction=True)

DIGEST = "sha256:" + "cd" * 32


def raw(service, payload):
    with socket.create_connection(("127.0.0.1", service.port), timeout=20) as sock:
        sock.sendall(payload)
        data = b""
        while part := sock.recv(65536):
            data += part
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return int(lines[0].split()[1]), headers, body


def request(service, method, target, headers=(), body=b"", host=None):
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host or f'127.0.0.1:{service.port}'}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    return raw(service, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def assert_json_error(status, headers, body, want):
    assert status == want, body[:300]
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]


def chunked_json(token):
    return [("Authorization", basic(token)), ("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")]


@pytest.mark.parametrize(
    "framing",
    [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n", b"2;" + b"x" * 70000 + b"\r\n{}\r\n0\r\n\r\n"],
    ids=["bad-size", "no-terminator", "huge-extension"],
)
def test_malformed_chunked_framing_is_a_json_400(live_service, org, token, framing):
    status, headers, body = request(live_service, "GET", "/magicache/config", chunked_json(token), framing)
    assert_json_error(status, headers, body, 400)


def test_host_outside_allowed_hosts(live_service, org, token):
    good = b'{"EngineID":"e1"}\n'
    framing = b"%x\r\n%s\r\n0\r\n\r\n" % (len(good), good)
    status, headers, body = request(
        live_service, "GET", "/magicache/config", chunked_json(token), framing, host="evil.example"
    )
    assert_json_error(status, headers, body, 400)
    status, headers, body = request(live_service, "GET", f"/blobs/{org.pk}/{DIGEST}?sig=x", host="evil.example")
    assert_json_error(status, headers, body, 400)
    # The operators' side keeps its HTML page.
    status, headers, _ = request(live_service, "GET", "/login/", host="evil.example")
    assert status == 400 and "json" not in headers["content-type"]


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_too_many_query_fields_on_a_blob_url(live_service, org, method):
    query = signing.signed_query(org.pk, DIGEST, method, 3600)
    target = f"/blobs/{org.pk}/{DIGEST}?{urllib.parse.urlencode(query)}&" + "&".join("f" * 1100)  # fits gunicorn's request line
    extra = [("Content-Length", "3")] if method == "PUT" else []
    status, headers, body = request(live_service, method, target, extra, b"abc" if method == "PUT" else b"")
    assert_json_error(status, headers, body, 400)


def test_unknown_engine_path_and_method(live_service, org, token):
    status, headers, body = request(live_service, "GET", "/magicache/nothing", [("Authorization", basic(token))])
    assert_json_error(status, headers, body, 404)
    status, headers, body = request(live_service, "DELETE", f"/blobs/{org.pk}/{DIGEST}")
    assert_json_error(status, headers, body, 405)


def test_what_gunicorn_refuses_itself_is_json_too(live_service, org):
    status, headers, body = request(live_service, "GET", "/magicache/config?" + "a" * 5000)
    assert_json_error(status, headers, body, 414)
    status, headers, body = request(live_service, "GET", "/magicache/config", [("Bad Header", "x")])
    assert_json_error(status, headers, body, 400)
    # gunicorn's own chunk check, on a path whose body it reads before the application.
    status, headers, body = request(live_service, "GET", "/magicache/config", [("Transfer-Encoding", "gzip, chunked")])
    assert status >= 400 and headers["content-type"] == "application/json"
