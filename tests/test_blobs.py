"""Blob URLs and storage, on the built-in storage and on S3 (a real SeaweedFS)."""

import base64
import urllib.parse
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from blobs import services
from blobs.models import Blob, BlobState
from blobs.signals import blob_verified
from tests.blob_helpers import (
    Transport,
    digest_of,
    download_url,
    partial_files,
    random_blob,
    short_put,
    stored,
    upload_url,
)
from tests.s3 import s3_storage, seaweedfs  # noqa: F401,F811
from tests.support import engine_request

OTHER_DIGEST = "sha256:" + "ab" * 32


pytestmark = pytest.mark.usefixtures("fresh_use_counts")


@pytest.fixture(params=["filesystem", "s3"])
def storage(request):
    """Each test that takes it runs on both stores."""
    request.getfixturevalue("s3_storage" if request.param == "s3" else "builtin")
    return request.param


@pytest.fixture
def transport(client):
    return Transport(client)


def put_blob(client, transport, token, data, digest=None):
    digest = digest or digest_of(data)
    answer = upload_url(client, token, digest).json()
    assert answer["Skip"] is False
    reply = transport.put(answer["URL"], data, answer["Headers"])
    assert reply.status == 200, reply.body
    return digest


def fetch(client, transport, token, digest, headers=None):
    response = download_url(client, token, digest)
    assert response.status_code == 200, response.content
    return transport.get(response.json()["URL"], headers)


def with_query(url, **changes):
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update(changes)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def tamper_signature(url):
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    key = "sig" if "sig" in query else "X-Amz-Signature"
    value = query[key]
    query[key] = ("0" if value[0] != "0" else "1") + value[1:]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def for_org(url, org, other_org):
    """The same URL with the organization swapped: the path names the org on both stores."""
    parts = urllib.parse.urlsplit(url)
    swapped = parts.path.replace(f"/{org.pk}/sha256", f"/{other_org.pk}/sha256")
    assert swapped != parts.path
    return urllib.parse.urlunsplit(parts._replace(path=swapped))


def assert_nothing_kept(org, digest):
    assert not stored(org, digest)
    assert partial_files(org) == []
    assert not services.has_verified_blob(org, digest)


# ---- upload and download ------------------------------------------------------------


def test_upload_then_download_returns_the_same_bytes(storage, client, transport, org, token):
    data, digest = random_blob()
    put_blob(client, transport, token, data)
    assert services.has_verified_blob(org, digest) or storage == "s3"
    reply = fetch(client, transport, token, digest)
    assert reply.status == 200
    assert reply.body == data
    blob = Blob.objects.get(organization=org, digest=digest)
    assert blob.state == BlobState.VERIFIED
    assert blob.size == len(data)
    assert blob.verified_at is not None


def test_second_upload_url_says_skip_for_this_org_only(storage, client, transport, org, token, other_token):
    data, digest = random_blob()
    put_blob(client, transport, token, data)
    again = upload_url(client, token, digest)
    assert again.status_code == 200
    assert again.json() == {"URL": "", "Headers": {}, "Skip": True}
    # Another organization never learns that this one holds the blob.
    theirs = upload_url(client, other_token, digest).json()
    assert theirs["Skip"] is False and theirs["URL"]
    assert download_url(client, other_token, digest).status_code == 404


def test_upload_answer_shape(storage, client, org, token):
    digest = OTHER_DIGEST
    answer = upload_url(client, token, digest).json()
    assert set(answer) == {"URL", "Headers", "Skip"}
    assert answer["Skip"] is False
    if storage == "s3":
        # The store is told the checksum so that it refuses other bytes itself.
        checksum = base64.b64encode(bytes.fromhex("ab" * 32)).decode()
        assert answer["Headers"] == {"x-amz-checksum-sha256": checksum}
        assert "x-amz-checksum-sha256" in urllib.parse.unquote(answer["URL"])
    else:
        assert answer["Headers"] == {}
        assert answer["URL"].startswith(f"http://testserver/blobs/{org.pk}/{digest}?")
    row = Blob.objects.get(organization=org, digest=digest)
    assert row.state == BlobState.PENDING


def test_public_url_is_used_for_builtin_urls(settings, client, org, token, builtin):
    settings.PUBLIC_URL = "https://cache.example.com"
    answer = upload_url(client, token, OTHER_DIGEST).json()
    assert answer["URL"].startswith(f"https://cache.example.com/blobs/{org.pk}/{OTHER_DIGEST}?")


def test_reput_of_existing_blob_is_a_harmless_200(storage, client, transport, org, token):
    data, digest = random_blob()
    target = services.upload_target(None if storage == "s3" else _fake_request(), org, digest)
    assert transport.put(target["URL"], data, target["Headers"]).status == 200
    assert transport.put(target["URL"], data, target["Headers"]).status == 200
    assert fetch(client, transport, token, digest).body == data


def _fake_request():
    from django.test import RequestFactory

    return RequestFactory().get("/")


# ---- refusals: nothing is kept --------------------------------------------------------


def test_wrong_digest_is_refused_and_nothing_stored(storage, client, transport, org, token):
    data, _ = random_blob()
    claimed = digest_of(b"something else")
    answer = upload_url(client, token, claimed).json()
    reply = transport.put(answer["URL"], data, answer["Headers"])
    assert 400 <= reply.status < 500
    assert_nothing_kept(org, claimed)
    assert upload_url(client, token, claimed).json()["Skip"] is False
    assert download_url(client, token, claimed).status_code == 404


def test_short_body_is_refused_and_nothing_stored(storage, client, transport, org, token):
    data, digest = random_blob()
    answer = upload_url(client, token, digest).json()
    if storage == "s3":
        status = short_put(answer["URL"], data[:1000], len(data), answer["Headers"])
        assert status == 0 or 400 <= status < 500
    else:
        reply = transport.put(answer["URL"], data[:1000], content_length=len(data))
        assert reply.status == 400
        assert "ended after 1000" in reply.json()["error"]
    assert_nothing_kept(org, digest)


def test_tampered_signature_is_refused(storage, client, transport, org, token):
    data, digest = random_blob()
    answer = upload_url(client, token, digest).json()
    reply = transport.put(tamper_signature(answer["URL"]), data, answer["Headers"])
    assert reply.status == 403
    if storage == "filesystem":
        assert "signature" in reply.json()["error"]
    assert_nothing_kept(org, digest)
    # A valid URL for one digest does not carry another digest's bytes either.
    other, other_digest = random_blob(1000)
    moved = answer["URL"].replace(digest.split(":")[1], other_digest.split(":")[1])
    assert transport.put(moved, other, answer["Headers"]).status == 403
    assert_nothing_kept(org, other_digest)


def test_builtin_url_with_changed_expiry_or_size_is_refused(client, transport, org, token, settings, builtin):
    data, digest = random_blob()
    url = upload_url(client, token, digest).json()["URL"]
    expires = int(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["expires"])
    assert transport.put(with_query(url, expires=str(expires + 3600)), data).status == 403
    assert transport.put(with_query(url, size=str(len(data))), data).status == 403
    assert transport.put(url.split("?")[0], data).status == 403
    assert not services.has_verified_blob(org, digest)


def test_urls_signed_with_a_rotated_out_key_stay_valid_while_it_is_a_fallback(
    client, transport, org, token, settings, builtin
):
    data, digest = random_blob()
    url = upload_url(client, token, digest).json()["URL"]
    old_key = settings.SECRET_KEY
    settings.SECRET_KEY = "a-new-key-" + "x" * 50
    assert transport.put(url, data).status == 403  # the old key is simply gone
    assert not services.has_verified_blob(org, digest)
    settings.SECRET_KEY_FALLBACKS = [old_key]
    assert transport.put(url, data).status == 200
    # New URLs are signed with the new key only.
    get_url = download_url(client, token, digest).json()["URL"]
    settings.SECRET_KEY_FALLBACKS = []
    assert transport.get(get_url).body == data
    settings.SECRET_KEY = old_key
    settings.SECRET_KEY_FALLBACKS = ["a-new-key-" + "x" * 50]
    assert transport.get(get_url).body == data


def test_expired_url_is_refused(storage, client, transport, org, token, settings):
    data, digest = random_blob()
    past = timezone.now() - timedelta(seconds=settings.BLOB_URL_LIFETIME + 120)
    with time_machine.travel(past, tick=False):
        answer = upload_url(client, token, digest).json()
    reply = transport.put(answer["URL"], data, answer["Headers"])
    assert reply.status == 403
    if storage == "filesystem":
        assert reply.json() == {"error": "blob URL has expired"}
    assert_nothing_kept(org, digest)


def test_expired_download_url_is_refused(storage, client, transport, org, token, settings):
    data, digest = random_blob()
    put_blob(client, transport, token, data)
    # Confirmed now: a HEAD signed in the past would itself be refused by S3.
    assert services.verified_blob_sizes(org, [digest]) == {digest: len(data)}
    past = timezone.now() - timedelta(seconds=settings.BLOB_URL_LIFETIME + 120)
    with time_machine.travel(past, tick=False):
        url = download_url(client, token, digest).json()["URL"]
    reply = transport.get(url, {"Range": "bytes=0-"})
    assert reply.status == 403
    assert reply.body != data


def test_url_valid_until_its_lifetime(client, transport, org, token, settings, builtin):
    data, digest = random_blob()
    answer = upload_url(client, token, digest).json()
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.BLOB_URL_LIFETIME - 30)):
        assert transport.put(answer["URL"], data).status == 200
        url = download_url(client, token, digest).json()["URL"]
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.BLOB_URL_LIFETIME * 2)):
        assert transport.get(url).status == 403


def test_download_url_cannot_upload(storage, client, transport, org, token):
    data, digest = random_blob()
    put_blob(client, transport, token, data)
    url = download_url(client, token, digest).json()["URL"]
    replacement = b"poisoned" + data[8:]
    reply = transport.put(url, replacement)
    assert reply.status == 403
    assert fetch(client, transport, token, digest).body == data


def test_upload_url_cannot_download(client, transport, org, token, builtin):
    data, digest = random_blob()
    url = upload_url(client, token, digest).json()["URL"]
    assert transport.put(url, data).status == 200
    reply = transport.get(url)
    assert reply.status == 403
    assert reply.body != data


def test_another_orgs_url_is_refused(storage, client, transport, org, other_org, token, other_token):
    data, digest = random_blob()
    answer = upload_url(client, token, digest).json()
    reply = transport.put(for_org(answer["URL"], org, other_org), data, answer["Headers"])
    assert reply.status == 403
    assert_nothing_kept(other_org, digest)
    assert_nothing_kept(org, digest)
    # And a download URL of one organization does not read another's blob.
    put_blob(client, transport, other_token, data)
    theirs = download_url(client, other_token, digest).json()["URL"]
    assert transport.get(for_org(theirs, other_org, org)).status == 403
    assert download_url(client, token, digest).status_code == 404


def test_announced_size_is_enforced(storage, client, transport, org):
    data, digest = random_blob()
    request = _fake_request() if storage == "filesystem" else None
    target = services.upload_target(request, org, digest, size=len(data) + 1)
    reply = transport.put(target["URL"], data, target["Headers"])
    assert 400 <= reply.status < 500
    assert_nothing_kept(org, digest)
    target = services.upload_target(request, org, digest, size=len(data))
    assert transport.put(target["URL"], data, target["Headers"]).status == 200
    assert services.confirm_s3_blob(org, digest, expected_size=len(data))
    assert not services.confirm_s3_blob(org, digest, expected_size=len(data) - 1)


# ---- Range reads ----------------------------------------------------------------------


def test_range_reads_at_several_offsets(storage, client, transport, org, token):
    data, digest = random_blob(300_001)
    put_blob(client, transport, token, data)
    url = download_url(client, token, digest).json()["URL"]
    size = len(data)
    for offset in (0, 1, 4095, 65536, 150_000, size - 1):
        reply = transport.get(url, {"Range": f"bytes={offset}-"})
        assert reply.status == 206
        assert reply.body == data[offset:]
        assert reply.headers["content-range"] == f"bytes {offset}-{size - 1}/{size}"
        assert int(reply.headers["content-length"]) == size - offset
    for first, last in ((0, 0), (10, 99), (299_000, 299_999), (200_000, 10_000_000)):
        reply = transport.get(url, {"Range": f"bytes={first}-{last}"})
        assert reply.status == 206
        assert reply.body == data[first : last + 1]
        assert reply.headers["content-range"] == f"bytes {first}-{min(last, size - 1)}/{size}"
    reply = transport.get(url, {"Range": "bytes=-100"})
    assert reply.status == 206 and reply.body == data[-100:]
    for unsatisfiable in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}"):
        reply = transport.get(url, {"Range": unsatisfiable})
        assert reply.status == 416
        assert reply.headers["content-range"] == f"bytes */{size}"


def test_reader_reopening_at_new_offsets_gets_the_right_bytes(storage, client, transport, org, token):
    """As the engine's urlReaderAt: read sequentially from an offset, and open a new
    request (Range: bytes=N-) whenever a read is not where the last one ended."""
    data, digest = random_blob(1_000_003)
    put_blob(client, transport, token, data)
    url = download_url(client, token, digest).json()["URL"]
    reads = [(0, 4096), (4096, 4096), (8192, 100_000), (500_000, 1000), (501_000, 1000),
             (10, 20), (999_990, 13)]
    position, body = None, b""
    for offset, length in reads:
        if position != offset:
            reply = transport.get(url, {"Range": f"bytes={offset}-"})
            assert reply.status == 206
            body, position = reply.body, offset
        chunk = body[offset - position : offset - position + length]
        assert chunk == data[offset : offset + length]
        body, position = body[offset - position + length :], offset + length


def test_head_and_full_get(client, transport, org, token, builtin):
    data, digest = random_blob()
    put_blob(client, transport, token, data)
    url = download_url(client, token, digest).json()["URL"]
    head = transport.get(url, method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["content-length"] == str(len(data))
    assert head.headers["accept-ranges"] == "bytes"
    ranged = transport.get(url, {"Range": "bytes=5-"}, method="HEAD")
    assert ranged.status == 206 and ranged.headers["content-length"] == str(len(data) - 5)
    full = transport.get(url)
    assert full.status == 200 and full.body == data
    assert full.headers["etag"] == f'"{digest}"'


def test_empty_blob(storage, client, transport, org, token):
    put_blob(client, transport, token, b"")
    digest = digest_of(b"")
    assert fetch(client, transport, token, digest).body == b""
    if storage == "filesystem":
        # Nothing to range over: the whole (empty) blob, never a 416 error body that an
        # engine, which ignores the status, would take for content.
        reply = fetch(client, transport, token, digest, {"Range": "bytes=0-"})
        assert (reply.status, reply.body) == (200, b"")


# ---- the engine endpoints -----------------------------------------------------------------


def test_read_only_token_can_download_but_not_upload(storage, client, transport, org, token, ro_token):
    data, digest = random_blob()
    refused = upload_url(client, ro_token, digest)
    assert refused.status_code == 403
    assert refused.json() == {"error": "this engine token is read-only"}
    assert not Blob.objects.filter(digest=digest).exists()
    put_blob(client, transport, token, data)
    reply = fetch(client, transport, ro_token, digest)
    assert reply.body == data


@pytest.mark.parametrize("endpoint", ["layerUploadURL", "layerDownloadURL"])
@pytest.mark.parametrize(
    "body",
    [{"Digest": "sha256:abc"}, {"Digest": "sha256:" + "AB" * 32}, {"Digest": "md5:" + "a" * 32},
     {"Digest": 12}, {"Digest": None}, {}, {"Digest": "sha256:" + "a" * 64 + "/../x"}],
)
def test_invalid_digest_is_a_400(client, org, token, endpoint, body):
    response = engine_request(client, "GET", f"/magicache/{endpoint}", token=token, body=body)
    assert response.status_code == 400
    assert "Digest" in response.json()["fields"]
    assert not Blob.objects.exists()


@pytest.mark.parametrize("endpoint", ["layerUploadURL", "layerDownloadURL"])
def test_malformed_bodies_and_auth(client, org, token, endpoint):
    path = f"/magicache/{endpoint}"
    assert engine_request(client, "GET", path, token=token, raw=b"{nope").status_code == 400
    assert engine_request(client, "GET", path, token=token, raw=b"[1]").status_code == 400
    assert engine_request(client, "GET", path, body={"Digest": OTHER_DIGEST}).status_code == 401
    assert engine_request(client, "GET", path, token="cwt_wrongwrongwrong", body={"Digest": OTHER_DIGEST}).status_code == 401
    response = engine_request(client, "POST", path, token=token, body={"Digest": OTHER_DIGEST})
    assert response.status_code == 405
    assert "error" in response.json()
    assert not Blob.objects.exists()


def test_download_url_for_unknown_or_pending_digest_is_404(storage, client, org, token):
    response = download_url(client, token, OTHER_DIGEST)
    assert response.status_code == 404
    assert OTHER_DIGEST in response.json()["error"]
    upload_url(client, token, OTHER_DIGEST)  # pending, never uploaded
    assert download_url(client, token, OTHER_DIGEST).status_code == 404


def test_chunked_engine_call_through_gunicorn(live_service, org, token):
    from tests.support import basic, chunked_request

    data, digest = random_blob(5000)
    headers = {"Authorization": basic(token), "Content-Type": "application/json"}
    body = b'{"Digest": "' + digest.encode() + b'"}\n'
    status, _, raw = chunked_request(live_service.url, "GET", "/magicache/layerUploadURL", headers, [body[:5], body[5:]])
    assert status == 200, raw
    import json

    import requests

    answer = json.loads(raw)
    assert answer["URL"].startswith(live_service.url + "/blobs/")
    put = requests.put(answer["URL"], data=data, timeout=30)
    assert put.status_code == 200
    status, _, raw = chunked_request(live_service.url, "GET", "/magicache/layerDownloadURL", headers, [body])
    assert status == 200
    assert requests.get(json.loads(raw)["URL"], timeout=30).content == data


# ---- the data plane's own errors -----------------------------------------------------------


def test_data_plane_errors_are_json(client, transport, org, token, builtin):
    data, digest = random_blob(1000)
    url = upload_url(client, token, digest).json()["URL"]
    path = urllib.parse.urlsplit(url).path
    response = client.post(path + "?" + urllib.parse.urlsplit(url).query, data=data, content_type="application/octet-stream")
    assert response.status_code == 405 and "error" in response.json()
    response = client.put(f"/blobs/{org.pk}/sha256:nothex?expires=1&sig=x", data=data)
    assert response.status_code == 403 and "error" in response.json()
    no_length = client.generic("PUT", urllib.parse.urlsplit(url).path + "?" + urllib.parse.urlsplit(url).query,
                               data=b"", CONTENT_LENGTH="")
    assert no_length.status_code == 400  # no length, no body: not the digest
    assert partial_files(org) == []
    assert not services.has_verified_blob(org, digest)
    missing = download_url(client, token, digest)
    assert missing.status_code == 404


def test_builtin_get_of_a_blob_whose_bytes_are_gone_is_404(client, transport, org, token, builtin):
    data, digest = random_blob(1000)
    put_blob(client, transport, token, data)
    url = download_url(client, token, digest).json()["URL"]
    services.get_store().delete(org.pk, digest)
    reply = transport.get(url)
    assert reply.status == 404 and "error" in reply.json()


# ---- verification signal, S3 confirmation, use counts ---------------------------------------


@pytest.mark.django_db(transaction=True)
def test_blob_verified_signal_is_sent_once_after_commit(storage, client, transport, org, token):
    seen = []

    def receiver(sender, blob, **kwargs):
        seen.append((sender, blob.digest, Blob.objects.get(pk=blob.pk).state))

    blob_verified.connect(receiver)
    try:
        data, digest = random_blob()
        put_blob(client, transport, token, data)
        if storage == "s3":
            assert seen == []
            assert services.confirm_s3_blob(org, digest, expected_size=len(data))
        assert seen == [(Blob, digest, BlobState.VERIFIED)]
        services.confirm_s3_blob(org, digest)
        assert len(seen) == 1
    finally:
        blob_verified.disconnect(receiver)


def test_verified_blob_sizes_confirms_pending_s3_uploads(s3_storage, client, transport, org, token):
    data, digest = random_blob()
    put_blob(client, transport, token, data)
    missing = digest_of(b"never uploaded")
    upload_url(client, token, missing)
    assert Blob.objects.get(organization=org, digest=digest).state == BlobState.PENDING
    assert services.verified_blob_sizes(org, [digest, missing, OTHER_DIGEST]) == {digest: len(data)}
    assert Blob.objects.get(organization=org, digest=digest).state == BlobState.VERIFIED


def test_confirm_s3_blob_rejects_and_deletes_wrong_bytes(s3_storage, org):
    data, digest = random_blob()
    store = services.get_store()
    # Written around the presigned URL, so the store kept no checksum: it gets hashed.
    s3_storage.client().put_object(Bucket=store.bucket, Key=store.key(org.pk, digest), Body=b"not it")
    assert services.confirm_s3_blob(org, digest) is False
    assert not stored(org, digest)
    assert not services.has_verified_blob(org, digest)
    s3_storage.client().put_object(Bucket=store.bucket, Key=store.key(org.pk, digest), Body=data)
    assert services.confirm_s3_blob(org, digest, expected_size=len(data)) is True
    assert services.verified_blob_sizes(org, [digest]) == {digest: len(data)}


def test_download_urls_count_uses_with_throttled_writes(storage, client, transport, org, token, settings):
    settings.BLOB_USE_WRITE_INTERVAL = 60
    data, digest = random_blob(1000)
    put_blob(client, transport, token, data)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        download_url(client, token, digest)
        blob = Blob.objects.get(organization=org, digest=digest)
        assert (blob.use_count, blob.last_used_at) == (1, start)
        download_url(client, token, digest)
        download_url(client, token, digest)
        assert Blob.objects.get(pk=blob.pk).use_count == 1  # throttled, still counted
    later = start + timedelta(seconds=61)
    with time_machine.travel(later, tick=False):
        download_url(client, token, digest)
        blob.refresh_from_db()
        assert (blob.use_count, blob.last_used_at) == (4, later)
        download_url(client, token, digest)
        assert services.flush_uses() == 1
        blob.refresh_from_db()
        assert blob.use_count == 5
    assert upload_url(client, token, digest).json()["Skip"] is True
    assert Blob.objects.get(pk=blob.pk).use_count == 5  # asking to upload is not a use


def test_record_use_of_other_blobs_is_swept(org, settings):
    settings.BLOB_USE_WRITE_INTERVAL = 60
    a = Blob.objects.create(organization=org, digest="sha256:" + "1" * 64, state=BlobState.VERIFIED, size=1)
    b = Blob.objects.create(organization=org, digest="sha256:" + "2" * 64, state=BlobState.VERIFIED, size=1)
    start = timezone.now()
    services.record_use(org, a.digest, now=start)
    services.record_use(org, a.digest, now=start + timedelta(seconds=1))
    services.record_use(org, b.digest, now=start + timedelta(seconds=2))
    services.record_use(org, b.digest, now=start + timedelta(seconds=3))
    a.refresh_from_db(), b.refresh_from_db()
    assert (a.use_count, b.use_count) == (1, 1)
    # Any use after the interval writes everything pending, for every blob.
    services.record_use(org, b.digest, now=start + timedelta(seconds=70))
    a.refresh_from_db(), b.refresh_from_db()
    assert (a.use_count, b.use_count) == (2, 3)
    assert a.last_used_at == start + timedelta(seconds=1)


# ---- odd requests and failures ----------------------------------------------------------


@pytest.mark.parametrize("header", ["bytes=0-9,20-29", "bytes=abc-", "items=0-5", "bytes=9-3", "bytes=-"])
def test_ranges_we_do_not_serve_as_206_get_the_whole_blob(client, transport, org, token, builtin, header):
    data, digest = random_blob(1000)
    put_blob(client, transport, token, data)
    url = download_url(client, token, digest).json()["URL"]
    reply = transport.get(url, {"Range": header})
    assert (reply.status, reply.body) == (200, data)


def test_if_range_honours_the_range_only_for_this_blob(client, transport, org, token, builtin):
    data, digest = random_blob(1000)
    put_blob(client, transport, token, data)
    url = download_url(client, token, digest).json()["URL"]
    reply = transport.get(url, {"Range": "bytes=100-", "If-Range": f'"{digest}"'})
    assert (reply.status, reply.body) == (206, data[100:])
    assert reply.headers["etag"] == f'"{digest}"'
    for other in ('"sha256:' + "0" * 64 + '"', "Wed, 21 Oct 2015 07:28:00 GMT"):
        reply = transport.get(url, {"Range": "bytes=100-", "If-Range": other})
        assert (reply.status, reply.body) == (200, data)


def test_disk_write_failure_is_a_507_and_keeps_nothing(client, transport, org, token, builtin, monkeypatch):
    import errno
    import os as real_os

    from blobs import storage

    def full(fd, data):
        raise OSError(errno.ENOSPC, real_os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage.os, "write", full)
    data, digest = random_blob()
    answer = upload_url(client, token, digest).json()
    reply = transport.put(answer["URL"], data)
    assert reply.status == 507
    assert "No space left" in reply.json()["error"]
    monkeypatch.undo()
    assert_nothing_kept(org, digest)


def test_upload_that_would_leave_the_disk_below_its_minimum_is_a_507(transport, client, org, token, builtin, settings, tmp_path):
    import os

    data, digest = random_blob()
    disk = os.statvfs(tmp_path)
    # Just enough room for all but the last few bytes of this blob above the minimum.
    settings.BLOB_DISK_MIN_FREE = disk.f_bavail * disk.f_frsize - len(data) + 4096
    answer = upload_url(client, token, digest).json()
    reply = transport.put(answer["URL"], data)
    assert reply.status == 507
    assert "CACHEWEB_BLOB_DISK_MIN_FREE" in reply.json()["error"]
    assert_nothing_kept(org, digest)
    settings.BLOB_DISK_MIN_FREE = 0
    assert transport.put(answer["URL"], data).status == 200


def test_blob_admin_lists_and_searches(admin_client, org):
    Blob.objects.create(organization=org, digest=OTHER_DIGEST, state=BlobState.VERIFIED, size=3)
    response = admin_client.get("/admin/blobs/blob/", {"q": "abab"})
    assert response.status_code == 200
    assert OTHER_DIGEST in response.content.decode()
    blob = Blob.objects.get(digest=OTHER_DIGEST)
    assert admin_client.get(f"/admin/blobs/blob/{blob.pk}/change/").status_code == 200


def test_unreachable_s3_means_unconfirmed_not_a_500(seaweedfs, settings, client, org, token):  # noqa: F811
    from tests.support import free_port

    storage = seaweedfs.blob_storage("down")
    storage["OPTIONS"]["endpoint_url"] = f"http://127.0.0.1:{free_port()}"
    settings.STORAGES = {**settings.STORAGES, "blobs": storage}
    digest = digest_of(b"x")
    Blob.objects.create(organization=org, digest=digest)
    assert services.confirm_s3_blob(org, digest) is False
    assert services.verified_blob_sizes(org, [digest]) == {}
    answer = upload_url(client, token, digest)
    assert answer.status_code == 200 and answer.json()["Skip"] is False
    assert download_url(client, token, digest).status_code == 404


def test_lost_file_is_uploaded_again_not_skipped(builtin, client, transport, org, token):
    """A data dir restored without some blob files: the rows say verified, the disk does
    not. Engines must be asked to upload again, and downloads must not promise bytes."""
    from blobs.storage import get_store

    data, digest = random_blob()
    put_blob(client, transport, token, data)
    get_store().path(org.pk, digest).unlink()
    assert services.verified_blob_sizes(org, [digest]) == {}
    assert Blob.objects.get(organization=org, digest=digest).state == BlobState.PENDING
    assert download_url(client, token, digest).status_code == 404
    put_blob(client, transport, token, data)
    assert fetch(client, transport, token, digest).body == data


def test_a_file_cut_short_is_never_served_even_on_an_issued_url(builtin, client, transport, org, token):
    """Without fsync, a power cut can bring a just-written blob back shorter. A download
    URL issued before must not serve it: 404, the blob goes back to pending, and the
    engine's next upload is not told to skip."""
    from blobs.storage import get_store

    data, digest = random_blob()
    put_blob(client, transport, token, data)
    url = download_url(client, token, digest).json()["URL"]
    assert transport.get(url).body == data
    path = get_store().path(org.pk, digest)
    path.write_bytes(data[: len(data) // 2])
    reply = transport.get(url)
    assert reply.status == 404 and reply.json()["error"]
    assert Blob.objects.get(organization=org, digest=digest).state == BlobState.PENDING
    assert upload_url(client, token, digest).json()["Skip"] is False
    put_blob(client, transport, token, data)
    assert transport.get(url).body == data


def test_bytes_without_a_verified_row_are_not_served(builtin, client, transport, org, token):
    data, digest = random_blob()
    put_blob(client, transport, token, data)
    url = download_url(client, token, digest).json()["URL"]
    Blob.objects.filter(organization=org, digest=digest).update(state=BlobState.PENDING)
    assert transport.get(url).status == 404


def test_unreadable_numbers_in_blob_urls_are_refused_not_500(builtin, client, transport, org, token):
    data, digest = random_blob()
    put_blob(client, transport, token, data)
    for query in ("expires=%C2%B2&sig=ab", "expires=1&size=%C2%B2&sig=ab"):
        resp = client.get(f"/blobs/{org.pk}/{digest}?{query}")
        assert resp.status_code == 403
        assert resp.json()["error"]


def test_absurd_range_is_ignored_not_500(builtin, client, transport, org, token):
    data, digest = random_blob()
    put_blob(client, transport, token, data)
    for header in ("bytes=" + "9" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000,
                   "bytes=\u0663-"):
        reply = fetch(client, transport, token, digest, {"Range": header})
        assert reply.status == 200
        assert reply.body == data


def test_abandoned_upload_files_are_swept(builtin, org, settings):
    """A worker killed mid-upload leaves its temp file; the periodic sweep removes it once
    it is older than a URL lifetime, and leaves younger ones (uploads in progress)."""
    import os
    import time

    from blobs.storage import get_store
    from blobs.tasks import sweep_partial_uploads

    store = get_store()
    digest = OTHER_DIGEST
    final = store.path(org.pk, digest)
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.parent / f".{final.name[:16]}.abandoned.part"
    young = final.parent / f".{final.name[:16]}.running.part"
    old.write_bytes(b"x" * 10)
    young.write_bytes(b"y" * 10)
    past = time.time() - settings.BLOB_URL_LIFETIME - 60
    os.utime(old, (past, past))
    sweep_partial_uploads()
    assert not old.exists()
    assert young.exists()


def test_verifyblobs_finds_wrong_and_missing_bytes(storage, client, transport, org, token):
    """After a crash with fsync off (or a bad disk): the command re-hashes verified blobs,
    deletes what does not match, and engines are asked to upload those again."""
    from datetime import timedelta
    from io import StringIO

    from django.core.management import CommandError, call_command
    from django.utils import timezone

    from blobs.storage import get_store

    store = get_store()
    (a, a_digest), (b, b_digest), (c, c_digest) = random_blob(), random_blob(), random_blob()
    for data in (a, b, c):
        put_blob(client, transport, token, data)
    # S3 uploads are confirmed (HEAD) when first relied on; rely on them now.
    assert len(services.verified_blob_sizes(org, [a_digest, b_digest, c_digest])) == 3
    flipped = bytes([a[0] ^ 1]) + a[1:]  # same size, other bytes: a size check cannot tell
    if store.kind == "filesystem":
        store.path(org.pk, a_digest).write_bytes(flipped)
    else:
        store.client.put_object(Bucket=store.bucket, Key=store.key(org.pk, a_digest), Body=flipped)
    store.delete(org.pk, b_digest)

    out = StringIO()
    call_command("verifyblobs", stdout=out)
    report = out.getvalue()
    assert f"{a_digest} had lost or wrong bytes" in report and f"{b_digest} had lost" in report
    assert c_digest not in report
    assert f"{org.slug}: 3 blob(s) checked, 2 bad" in report
    states = dict(Blob.objects.filter(organization=org).values_list("digest", "state"))
    assert states == {a_digest: BlobState.PENDING, b_digest: BlobState.PENDING, c_digest: BlobState.VERIFIED}
    assert store.info(org.pk, a_digest) is None  # the wrong bytes are gone
    assert upload_url(client, token, a_digest).json()["Skip"] is False
    put_blob(client, transport, token, a)
    assert fetch(client, transport, token, a_digest).body == a

    # --since limits the check to recently verified blobs.
    Blob.objects.filter(digest=c_digest).update(verified_at=timezone.now() - timedelta(days=2))
    out = StringIO()
    call_command("verifyblobs", "--since", "1h", "--org", org.slug, stdout=out)
    assert f"{org.slug}: 1 blob(s) checked, 0 bad" in out.getvalue()
    with pytest.raises(CommandError):
        call_command("verifyblobs", "--since", "yesterday")
    with pytest.raises(CommandError):
        call_command("verifyblobs", "--org", "no-such-org")


def test_verifyblobs_stopped_by_an_unreadable_store_still_marks_what_it_deleted(
    storage, client, transport, org, token, monkeypatch
):
    """rehash_blobs deletes bad bytes as it goes. When a later blob cannot be read (S3
    down, a disk error), the ones already deleted must not stay behind verified rows: on
    S3 a verified row is trusted without a HEAD, so engines would be told to skip the
    upload and then fail to download it."""
    from blobs.storage import StoreUnavailable, get_store

    store = get_store()
    blobs = sorted((random_blob(), random_blob()), key=lambda blob: blob[1])
    (bad, bad_digest), (_, unreadable_digest) = blobs
    for data, _ in blobs:
        put_blob(client, transport, token, data)
    assert len(services.verified_blob_sizes(org, [bad_digest, unreadable_digest])) == 2
    flipped = bytes([bad[0] ^ 1]) + bad[1:]
    if store.kind == "filesystem":
        store.path(org.pk, bad_digest).write_bytes(flipped)
    else:
        store.client.put_object(Bucket=store.bucket, Key=store.key(org.pk, bad_digest), Body=flipped)
    reader = "hash_file" if store.kind == "filesystem" else "hash_object"
    real = getattr(type(store), reader)

    def fails_on_the_second(self, org_id, digest):
        if digest == unreadable_digest:
            raise StoreUnavailable("connection reset")
        return real(self, org_id, digest)

    monkeypatch.setattr(type(store), reader, fails_on_the_second)
    with pytest.raises(StoreUnavailable):
        services.rehash_blobs(org)
    monkeypatch.undo()
    assert store.info(org.pk, bad_digest) is None
    assert Blob.objects.get(organization=org, digest=bad_digest).state == BlobState.PENDING
    assert upload_url(client, token, bad_digest).json()["Skip"] is False


def test_verifyblobs_counts_a_blob_the_disk_cannot_read_as_bad(builtin, client, transport, org, token, monkeypatch):
    """An I/O error reading a blob (the bad disk verifyblobs is for) marks that blob bad
    and the check goes on, instead of ending the command at the first unreadable file."""
    import errno
    from io import StringIO

    from django.core.management import call_command

    from blobs.storage import FileSystemBlobStore, get_store

    store = get_store()
    blobs = sorted((random_blob(), random_blob()), key=lambda blob: blob[1])
    (_, unreadable_digest), (_, good_digest) = blobs
    for data, _ in blobs:
        put_blob(client, transport, token, data)
    real_open = FileSystemBlobStore.open

    class Unreadable:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, size=-1):
            raise OSError(errno.EIO, "Input/output error")

    def open_(self, org_id, digest):
        return Unreadable() if digest == unreadable_digest else real_open(self, org_id, digest)

    monkeypatch.setattr(FileSystemBlobStore, "open", open_)
    out = StringIO()
    call_command("verifyblobs", stdout=out)
    monkeypatch.undo()
    assert f"{unreadable_digest} had lost or wrong bytes" in out.getvalue()
    assert f"{org.slug}: 2 blob(s) checked, 1 bad" in out.getvalue()
    states = dict(Blob.objects.filter(organization=org).values_list("digest", "state"))
    assert states == {unreadable_digest: BlobState.PENDING, good_digest: BlobState.VERIFIED}
    assert not store.path(org.pk, unreadable_digest).exists()


def test_a_put_of_a_verified_blob_counts_as_verified_now(builtin, client, transport, org, token):
    """A second PUT rewrites the file (a new one renamed over it). Those bytes are as
    fresh as a first upload's, so `verifyblobs --since` after a crash must check them."""
    from datetime import timedelta
    from io import StringIO

    from django.core.management import call_command

    data, digest = random_blob()
    target = services.upload_target(_fake_request(), org, digest)
    assert transport.put(target["URL"], data).status == 200
    Blob.objects.filter(organization=org, digest=digest).update(verified_at=timezone.now() - timedelta(days=2))
    assert transport.put(target["URL"], data).status == 200
    assert Blob.objects.get(organization=org, digest=digest).verified_at > timezone.now() - timedelta(minutes=1)
    out = StringIO()
    call_command("verifyblobs", "--since", "1h", "--org", org.slug, stdout=out)
    assert f"{org.slug}: 1 blob(s) checked, 0 bad" in out.getvalue()
