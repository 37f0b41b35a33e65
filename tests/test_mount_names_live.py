"""Cache mount names are data: whatever string the user chose reaches the service and
comes back byte for byte, through gunicorn and the engine's chunked JSON bodies."""

import hashlib
import json
import os

import pytest
import requests

from blobs.storage import get_store
from mounts.models import CacheMount, MountSnapshot, SnapshotState
from tests.support import basic, chunked_request


@pytest.fixture
def live_service(module_live_service, transactional_db):
    """The module's one server (tests/conftest.py): these tests only read its answers."""
    return module_live_service


pytestmark = pytest.mark.django_db(transaction=True)

NAMES = [
    "/go/pkg/mod",
    "/root/.cache/go-build",
    "maven/",
    "C:\\cache",
    "a/./b",
    "../../etc/passwd",
    "with spaces  and\ttabs",
    " leading and trailing ",
    "new\nline and \u202e bidi",
    "caf\u00e9 \u65e5\u672c \U0001f600",
    "<script>alert(1)</script>&amp;",
    "x" * 1024,
    "\u00e9" * 512,  # 1,024 bytes in 512 characters
]


def raw_call(service, token, path, body):
    """As the Go client: UTF-8 JSON (not \\u escapes) written through a pipe, chunked."""
    raw = json.dumps(body, ensure_ascii=False).encode() + b"\n"
    status, _, reply = chunked_request(
        service.url, "GET", path,
        {"Authorization": basic(token), "Content-Type": "application/json"},
        [raw[:7], raw[7:]],
    )
    return status, reply


def test_every_name_round_trips_byte_for_byte(live_service, org, token):
    blobs = {}
    for name in NAMES:
        data = os.urandom(1000)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[name] = digest
        status, reply = raw_call(
            live_service, token, "/magicache/cacheMountUploadURL",
            {"CacheName": name, "Digest": digest, "Size": len(data)},
        )
        assert status == 200, (name, reply)
        answer = json.loads(reply)
        assert answer["Skip"] is False
        put = requests.put(answer["URL"], data=data, headers=answer["Headers"], timeout=30)
        assert put.status_code == 200, put.text

    assert sorted(m.name.encode() for m in CacheMount.objects.filter(organization=org)) == sorted(
        n.encode() for n in NAMES
    )
    assert MountSnapshot.objects.filter(state=SnapshotState.VERIFIED).count() == len(NAMES)

    status, reply = raw_call(live_service, token, "/magicache/cacheMountConfig", {})
    assert status == 200, reply
    entries = json.loads(reply)["SyncedCacheMounts"]
    assert sorted(e["Name"].encode() for e in entries) == sorted(n.encode() for n in NAMES)
    for entry in entries:
        assert entry["Digest"] == blobs[entry["Name"]]
        assert entry["URL"]

    # Blobs live under their digest only: no file or directory is named after a mount.
    store = get_store()
    root = store.root
    for name, digest in blobs.items():
        assert store.path(org.pk, digest).is_file()
    on_disk = {p.name for p in root.rglob("*")}
    for name in NAMES:
        assert name not in on_disk and os.path.basename(name.rstrip("/")) not in on_disk - {""}


def test_names_past_the_limit_or_with_nul_are_refused(live_service, org, token):
    digest = "sha256:" + "a" * 64
    for name in ["x" * 1025, "\u00e9" * 513, "a\x00b", ""]:
        status, reply = raw_call(
            live_service, token, "/magicache/cacheMountUploadURL", {"CacheName": name, "Digest": digest, "Size": 5}
        )
        assert status == 400, name
        assert json.loads(reply)["error"]
    assert not CacheMount.objects.exists()


def test_limit_is_a_setting(org, token, client, settings):
    from tests.support import engine_request

    settings.MOUNT_NAME_MAX_BYTES = 2000
    name = "y" * 2000
    response = engine_request(
        client, "GET", "/magicache/cacheMountUploadURL", token=token,
        body={"CacheName": name, "Digest": "sha256:" + "b" * 64, "Size": 5},
    )
    assert response.status_code == 200, response.content
    assert CacheMount.objects.get().name == name


def test_dashboard_shows_names_escaped(client, org, django_user_model):
    CacheMount.objects.create(organization=org, name="<b>bold</b> & /go/pkg/mod")
    admin = django_user_model.objects.create_superuser("root", password="pw-root-123")
    client.force_login(admin)
    page = client.get(f"/orgs/{org.slug}/cache/mounts/").content.decode()
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; /go/pkg/mod" in page
    assert "<b>bold</b>" not in page
