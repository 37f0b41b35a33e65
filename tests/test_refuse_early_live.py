"""Refuse before reading: through gunicorn, a request that will be refused is answered
from its headers alone, and the connection is closed, although its declared body (10 GB)
was never sent."""

import json
import socket
import urllib.parse

import pytest

from blobs import signing
from tests.support import basic


@pytest.fixture
def live_service(module_live_service, transactional_db):
    """The module's one server (tests/conftest.py): these tests only read its answers."""
    return module_live_service


pytestmark = pytest.mark.django_db(transaction=True)

HUGE = 10 * 1024**3
DIGEST = "sha256:" + "ab" * 32


def headers_only(service, method, target, headers, chunked=False):
    """Send only the request head (and, chunked, the start of a huge first chunk).
    Returns (status, JSON body, connection closed by the server)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{service.port}", "Content-Type: application/json"]
    lines += ["Transfer-Encoding: chunked"] if chunked else [f"Content-Length: {HUGE}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if chunked:
        head += b"%x\r\n{" % HUGE
    with socket.create_connection(("127.0.0.1", service.port), timeout=20) as sock:
        sock.sendall(head)
        data = b""
        # Read until the server closes; the socket's timeout fails the test if it never
        # answers (it would be waiting for the body) or never closes.
        while part := sock.recv(65536):
            data += part
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body), True


def blob_target(org_id, method, lifetime=3600, digest=DIGEST):
    query = signing.signed_query(org_id, digest, method, lifetime)
    return f"/blobs/{org_id}/{digest}?{urllib.parse.urlencode(query)}"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    "auth", [None, basic("cwt_" + "x" * 40), "Bearer abc", basic("not-a-token", "pw")],
    ids=["no-token", "unknown-token", "not-basic", "with-password"],
)
def test_engine_call_without_a_valid_token(live_service, org, auth, chunked):
    headers = {"Authorization": auth} if auth else {}
    status, body, closed = headers_only(live_service, "POST", "/magicache/records", headers, chunked)
    assert status == 401
    assert body["error"]
    assert closed


def test_revoked_token_is_refused_before_reading(live_service, org, token):
    from accounts.models import EngineToken

    EngineToken.objects.filter(organization=org).update(revoked_at="2026-01-01T00:00:00Z")
    status, body, _ = headers_only(live_service, "POST", "/magicache/records", {"Authorization": basic(token)}, True)
    assert status == 401 and "revoked" in body["error"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("case", ["bad-signature", "expired", "get-url", "other-org", "unsigned"])
def test_blob_put_with_a_wrong_url(live_service, org, other_org, case, chunked):
    target = {
        "bad-signature": blob_target(org.pk, "PUT").replace("sig=", "sig=0"),
        "expired": blob_target(org.pk, "PUT", lifetime=-1),
        "get-url": blob_target(org.pk, "GET"),
        "other-org": blob_target(other_org.pk, "PUT").replace(f"/blobs/{other_org.pk}/", f"/blobs/{org.pk}/"),
        "unsigned": f"/blobs/{org.pk}/{DIGEST}",
    }[case]
    status, body, closed = headers_only(live_service, "PUT", target, {}, chunked)
    assert status == 403
    assert body["error"]
    assert closed
