"""Synced cache mounts: the two engine endpoints, policy, limits, snapshots, retention and
contents, in-process on the built-in storage. Real processes (gunicorn, a Celery worker,
SeaweedFS) are in test_mounts_live.py."""

import os
import tarfile
from datetime import timedelta

import pytest
import time_machine
import zstandard
from django.utils import timezone

from blobs import services as blob_services
from mounts import services, tasks
from mounts.models import (
    SNAPSHOT_MEDIA_TYPE,
    CacheMount,
    ContentsState,
    MountPolicy,
    MountSnapshot,
    MountSwitch,
    SkipReason,
    SnapshotState,
    SyncMode,
)
from tests.blob_helpers import Transport
from tests.mount_archives import digest_of, expected_contents, make_tree, tar_zstd
from tests.support import basic, engine_request

CONFIG = "/magicache/cacheMountConfig"
UPLOAD = "/magicache/cacheMountUploadURL"


# Every test here uses the built-in storage.
pytestmark = pytest.mark.usefixtures("builtin")


@pytest.fixture(autouse=True)
def queued(monkeypatch):
    """Tasks these tests queue, captured instead of sent: here the test plays the worker
    (test_mounts_live.py has a real one)."""
    calls = {"confirm": [], "index": []}
    monkeypatch.setattr(
        tasks.confirm_snapshot_upload, "apply_async", lambda args, **kw: calls["confirm"].append((args, kw))
    )
    monkeypatch.setattr(
        tasks.index_snapshot_contents, "apply_async", lambda args, **kw: calls["index"].append(tuple(args))
    )
    return calls


@pytest.fixture
def transport(client):
    return Transport(client)


def offer(client, token, name, digest, size, **extra):
    return engine_request(
        client, "GET", UPLOAD, token=token, body={"CacheName": name, "Digest": digest, "Size": size}, **extra
    )


def config(client, token):
    response = engine_request(client, "GET", CONFIG, token=token, body={})
    assert response.status_code == 200, response.content
    return {m["Name"]: m for m in response.json()["SyncedCacheMounts"]}


def blob(seed=b"x", size=5000):
    data = zstandard.ZstdCompressor().compress(os.urandom(8) + seed * size)
    return data, digest_of(data)


def upload(client, transport, token, name, data, django_capture_on_commit_callbacks):
    """The engine's shutdown sync of one mount: ask, then PUT with exactly the Headers."""
    digest = digest_of(data)
    with django_capture_on_commit_callbacks(execute=True):
        answer = offer(client, token, name, digest, len(data)).json()
        assert answer["Skip"] is False, answer
        reply = transport.put(answer["URL"], data, answer["Headers"])
    assert reply.status == 200, reply.body
    return digest


# ---- transport, auth and bad input -------------------------------------------------------


@pytest.mark.parametrize("path", [CONFIG, UPLOAD])
def test_auth_and_method(client, org, token, path):
    response = engine_request(client, "GET", path, body={})
    assert response.status_code == 401
    assert "error" in response.json()
    response = engine_request(client, "GET", path, body={}, HTTP_AUTHORIZATION=basic("cwt_notarealtoken123"))
    assert response.status_code == 401
    response = engine_request(client, "POST", path, token=token, body={})
    assert response.status_code == 405
    assert "error" in response.json()
    response = engine_request(client, "GET", path + "/", token=token, body={})
    assert response.status_code == 404


GOOD = {"CacheName": "go-mod", "Digest": "sha256:" + "a" * 64, "Size": 100}


@pytest.mark.parametrize(
    "change",
    [
        {"CacheName": ""},
        {"CacheName": "x" * 1025},
        {"CacheName": "\u00e9" * 513},  # 1026 bytes of UTF-8 in 513 characters
        {"CacheName": "nul\x00name"},
        {"CacheName": "lone\ud800surrogate"},
        {"CacheName": 42},
        {"CacheName": None},
        {"Digest": "sha256:xyz"},
        {"Digest": "md5:" + "a" * 32},
        {"Digest": "sha256:" + "A" * 64},
        {"Digest": None},
        {"Size": -1},
        {"Size": 0},
        {"Size": "100"},
        {"Size": 1.5},
        {"Size": True},
        {"Size": None},
        {"Size": 2**63},
    ],
)
def test_bad_offers_are_400_and_change_nothing(client, org, token, change):
    response = engine_request(client, "GET", UPLOAD, token=token, body={**GOOD, **change})
    assert response.status_code == 400, response.content
    assert response.json()["error"]
    assert not CacheMount.objects.exists()
    assert not MountSnapshot.objects.exists()


@pytest.mark.parametrize("raw", [b"[1, 2]\n", b"{not json", b'"string"\n'])
def test_malformed_bodies_are_400(client, org, token, raw):
    for path in (CONFIG, UPLOAD):
        response = engine_request(client, "GET", path, token=token, raw=raw)
        assert response.status_code == 400, (path, response.content)
        assert "error" in response.json()
    assert not CacheMount.objects.exists()


def test_names_are_data_not_paths(client, transport, org, token, settings, tmp_path, django_capture_on_commit_callbacks):
    names = ["go/mod", "кэш pnpm-store v2", "a..b", "x" * 255]
    for name in names:
        data, _ = blob(name.encode())
        upload(client, transport, token, name, data, django_capture_on_commit_callbacks)
    assert set(config(client, token)) == set(names)
    # Nothing but content-addressed blobs under the store: no name became a path.
    stored = [p.relative_to(tmp_path / "blobs") for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert len(stored) == len(names)
    assert all(p.parts[1] == "sha256" for p in stored)


# ---- recording, policy and skip decisions -----------------------------------------------


def test_first_report_records_the_name_and_config_says_nothing_stored_yet(client, org, token, queued):
    data, digest = blob()
    with time_machine.travel(timezone.now(), tick=False):
        answer = offer(client, token, "go-mod", digest, len(data)).json()
        now = timezone.now()
    assert answer["Skip"] is False
    assert answer["URL"].startswith("http://testserver/blobs/")
    assert isinstance(answer["Headers"], dict)
    mount = CacheMount.objects.get(organization=org, name="go-mod")
    assert mount.first_seen == mount.last_seen == now
    snapshot = mount.snapshots.get()
    assert (snapshot.state, snapshot.digest, snapshot.size) == (SnapshotState.PENDING, digest, len(data))
    assert snapshot.token.organization == org
    assert snapshot.expires_at > now
    assert config(client, token) == {
        "go-mod": {"Name": "go-mod", "Digest": "", "Size": 0, "MediaType": "", "URL": ""}
    }


def test_upload_commits_and_config_serves_the_same_bytes(
    client, transport, org, token, queued, django_capture_on_commit_callbacks
):
    data, digest = blob()
    upload(client, transport, token, "go-mod", data, django_capture_on_commit_callbacks)
    snapshot = MountSnapshot.objects.get()
    assert snapshot.state == SnapshotState.VERIFIED
    assert queued["index"] == [(snapshot.pk,)]
    entry = config(client, token)["go-mod"]
    assert entry["Digest"] == digest
    assert entry["Size"] == len(data)
    assert entry["MediaType"] == SNAPSHOT_MEDIA_TYPE
    assert transport.get(entry["URL"]).body == data
    mount = CacheMount.objects.get()
    assert mount.last_synced_at == snapshot.verified_at
    assert mount.last_skip_reason == ""


def test_same_digest_again_is_skipped(client, transport, org, token, django_capture_on_commit_callbacks):
    data, digest = blob()
    upload(client, transport, token, "go-mod", data, django_capture_on_commit_callbacks)
    answer = offer(client, token, "go-mod", digest, len(data)).json()
    assert answer == {"URL": "", "Headers": {}, "Skip": True}
    assert MountSnapshot.objects.count() == 1
    mount = CacheMount.objects.get()
    assert mount.last_skip_reason == SkipReason.UNCHANGED
    assert mount.last_synced_at > MountSnapshot.objects.get().verified_at


def test_snapshot_names_the_engine_last_seen_with_its_token_and_address(client, org, token, other_token):
    engine_request(client, "GET", "/magicache/config", token=token, body={"EngineID": "runner-1"})
    offer(client, token, "go-mod", "sha256:" + "a" * 64, 10)
    assert MountSnapshot.objects.get().engine.engine_id == "runner-1"
    # A second engine with the same token behind the same address: the best guess is
    # the one that called /config last (activity.attribution).
    engine_request(client, "GET", "/magicache/config", token=token, body={"EngineID": "runner-2"})
    offer(client, token, "go-mod", "sha256:" + "b" * 64, 10)
    assert MountSnapshot.objects.get(digest="sha256:" + "b" * 64).engine.engine_id == "runner-2"
    # Another token from that address matches no engine.
    offer(client, other_token, "go-mod", "sha256:" + "c" * 64, 10)
    assert MountSnapshot.objects.get(digest="sha256:" + "c" * 64).engine is None


def test_retried_offer_shares_one_pending_snapshot(client, org, token, queued):
    data, digest = blob()
    first = offer(client, token, "go-mod", digest, len(data)).json()
    second = offer(client, token, "go-mod", digest, len(data)).json()
    assert first["Skip"] is second["Skip"] is False
    assert MountSnapshot.objects.filter(state=SnapshotState.PENDING).count() == 1


def test_pattern_policy_syncs_only_matching_names(client, transport, org, token, django_capture_on_commit_callbacks):
    MountPolicy.objects.create(organization=org, mode=SyncMode.PATTERNS, patterns="go-*\n  pnpm-store-v?\n")
    data, digest = blob()
    assert offer(client, token, "npm-cache", digest, len(data)).json()["Skip"] is True
    assert offer(client, token, "pnpm-store-v10", digest, len(data)).json()["Skip"] is True
    upload(client, transport, token, "go-mod", data, django_capture_on_commit_callbacks)
    upload(client, transport, token, "pnpm-store-v2", blob(b"p")[0], django_capture_on_commit_callbacks)
    # Unsynced names are still recorded, with the reason, for operators to see.
    npm = CacheMount.objects.get(name="npm-cache")
    assert npm.last_skip_reason == SkipReason.NOT_SYNCED
    assert not npm.snapshots.exists()
    assert set(config(client, token)) == {"go-mod", "pnpm-store-v2"}
    # The per-mount switch overrides the policy in both directions.
    CacheMount.objects.filter(name="npm-cache").update(switch=MountSwitch.ON)
    CacheMount.objects.filter(name="go-mod").update(switch=MountSwitch.OFF)
    assert set(config(client, token)) == {"npm-cache", "pnpm-store-v2"}
    # npm-cache now takes uploads; these bytes are already held, so it commits at once.
    assert offer(client, token, "npm-cache", digest, len(data)).json()["Skip"] is True
    assert npm.snapshots.get().state == SnapshotState.VERIFIED


def test_switched_off_mount_is_skipped_and_not_listed(client, transport, org, token, django_capture_on_commit_callbacks):
    upload(client, transport, token, "go-mod", blob()[0], django_capture_on_commit_callbacks)
    CacheMount.objects.filter(name="go-mod").update(switch=MountSwitch.OFF)
    data, digest = blob(b"new")
    assert offer(client, token, "go-mod", digest, len(data)).json()["Skip"] is True
    assert CacheMount.objects.get().last_skip_reason == SkipReason.SWITCHED_OFF
    assert MountSnapshot.objects.count() == 1
    assert config(client, token) == {}


def test_mount_size_limit(client, org, token, settings):
    digest = "sha256:" + "b" * 64
    settings.MOUNT_SIZE_LIMIT = 10_000
    assert offer(client, token, "big", digest, 10_001).json()["Skip"] is True
    assert CacheMount.objects.get(name="big").last_skip_reason == SkipReason.MOUNT_LIMIT
    assert offer(client, token, "big", digest, 10_000).json()["Skip"] is False
    # The mount's own limit beats the default, up or down; 0 means none.
    CacheMount.objects.filter(name="big").update(size_limit=50_000)
    assert offer(client, token, "big", "sha256:" + "c" * 64, 50_000).json()["Skip"] is False
    assert offer(client, token, "big", "sha256:" + "d" * 64, 50_001).json()["Skip"] is True
    CacheMount.objects.filter(name="big").update(size_limit=0)
    assert offer(client, token, "big", "sha256:" + "e" * 64, 10**12).json()["Skip"] is False


def test_organization_size_limit_counts_other_mounts_current_snapshots(
    client, transport, org, token, settings, django_capture_on_commit_callbacks
):
    first, _ = blob(b"a", size=3000)
    upload(client, transport, token, "one", first, django_capture_on_commit_callbacks)
    MountPolicy.objects.create(organization=org, size_limit=len(first) + 1000)
    assert offer(client, token, "two", "sha256:" + "b" * 64, 1001).json()["Skip"] is True
    assert CacheMount.objects.get(name="two").last_skip_reason == SkipReason.ORG_LIMIT
    assert offer(client, token, "two", "sha256:" + "b" * 64, 1000).json()["Skip"] is False
    # Replacing a mount's own snapshot only counts the new size.
    assert offer(client, token, "one", "sha256:" + "c" * 64, len(first) + 1000).json()["Skip"] is False
    # An organization without its own limit falls back to the server default.
    MountPolicy.objects.filter(organization=org).update(size_limit=None)
    settings.MOUNT_ORG_SIZE_LIMIT = len(first) + 10
    assert offer(client, token, "three", "sha256:" + "d" * 64, 11).json()["Skip"] is True


def test_read_only_token_skips_and_writes_nothing(client, transport, org, token, ro_token, django_capture_on_commit_callbacks):
    data, digest = blob()
    assert offer(client, ro_token, "go-mod", digest, len(data)).json() == {"URL": "", "Headers": {}, "Skip": True}
    # Not even the name: recorded mounts are offered to every engine.
    assert not CacheMount.objects.exists()
    upload(client, transport, token, "go-mod", data, django_capture_on_commit_callbacks)
    other, other_digest = blob(b"other")
    assert offer(client, ro_token, "go-mod", other_digest, len(other)).json()["Skip"] is True
    assert CacheMount.objects.get().last_skip_reason == SkipReason.READ_ONLY
    assert MountSnapshot.objects.count() == 1
    # Reading is what read-only tokens are for.
    assert transport.get(config(client, ro_token)["go-mod"]["URL"]).body == data


def test_organizations_never_see_each_others_mounts(
    client, transport, org, token, other_token, django_capture_on_commit_callbacks
):
    data, digest = blob()
    upload(client, transport, token, "go-mod", data, django_capture_on_commit_callbacks)
    assert config(client, other_token) == {}
    # The other organization uploading the same bytes is not told it has them.
    answer = offer(client, other_token, "go-mod", digest, len(data)).json()
    assert answer["Skip"] is False


def test_bytes_the_organization_already_holds_commit_without_an_upload(
    client, transport, org, token, queued, django_capture_on_commit_callbacks
):
    data, digest = blob()
    upload(client, transport, token, "go-mod", data, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        answer = offer(client, token, "go-mod-copy", digest, len(data)).json()
    assert answer["Skip"] is True
    copy = MountSnapshot.objects.get(mount__name="go-mod-copy")
    assert copy.state == SnapshotState.VERIFIED
    assert config(client, token)["go-mod-copy"]["Digest"] == digest
    assert len(queued["index"]) == 2


def test_mount_count_cap(client, org, token, settings):
    settings.MOUNTS_PER_ORG = 2
    for name in ("a", "b", "c"):
        assert offer(client, token, name, "sha256:" + "b" * 64, 10).status_code == 200
    assert sorted(CacheMount.objects.values_list("name", flat=True)) == ["a", "b"]
    assert offer(client, token, "c", "sha256:" + "b" * 64, 10).json()["Skip"] is True


# ---- committing, expiry and retention ----------------------------------------------------


def test_pending_upload_fails_once_its_url_has_expired(
    client, org, token, settings, queued, django_capture_on_commit_callbacks
):
    settings.BLOB_URL_LIFETIME = 600
    settings.MOUNT_UPLOAD_GRACE = 60
    settings.MOUNT_CONFIRM_INTERVAL = 10
    data, digest = blob()
    start = timezone.now()
    with time_machine.travel(start, tick=False), django_capture_on_commit_callbacks(execute=True):
        offer(client, token, "go-mod", digest, len(data))
    snapshot = MountSnapshot.objects.get()
    (args, kwargs), = queued["confirm"]
    assert args == (snapshot.pk,)
    assert kwargs["countdown"] == 10
    with time_machine.travel(start + timedelta(seconds=655), tick=False):
        assert services.confirm_snapshot_upload(snapshot.pk) == services.PENDING
        # The last check lands just past the give-up time, not a whole interval later.
        assert services.next_confirmation_delay(snapshot.pk) == 6
    with time_machine.travel(start + timedelta(seconds=661), tick=False):
        assert services.confirm_snapshot_upload(snapshot.pk) == services.FAILED
        assert services.confirm_snapshot_upload(snapshot.pk) == services.DONE
    snapshot.refresh_from_db()
    assert snapshot.state == SnapshotState.FAILED
    assert snapshot.error
    assert config(client, token)["go-mod"]["URL"] == ""


def test_sweep_settles_pending_snapshots_whose_confirmation_was_lost(
    client, transport, org, token, settings, queued
):
    settings.BLOB_URL_LIFETIME = 600
    settings.MOUNT_UPLOAD_GRACE = 0
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        arrived, _ = blob(b"arrived")
        answer = offer(client, token, "arrived", digest_of(arrived), len(arrived)).json()
        assert transport.put(answer["URL"], arrived, answer["Headers"]).status == 200
        lost, _ = blob(b"lost")
        offer(client, token, "lost", digest_of(lost), len(lost))
    with time_machine.travel(start + timedelta(seconds=300), tick=False):
        assert services.sweep_pending_snapshots() == {}
    with time_machine.travel(start + timedelta(seconds=601), tick=False):
        assert services.sweep_pending_snapshots() == {services.VERIFIED: 1, services.FAILED: 1}
    states = dict(MountSnapshot.objects.values_list("mount__name", "state"))
    assert states == {"arrived": SnapshotState.VERIFIED, "lost": SnapshotState.FAILED}
    # Failed rows stay for operators to see until the storage lifecycle pass's grace is
    # over; that pass, not the sweep, deletes them.
    from retention.services import collect_organization, grace

    with time_machine.travel(start + timedelta(days=8), tick=False):
        services.sweep_pending_snapshots()
        assert MountSnapshot.objects.filter(state=SnapshotState.FAILED).exists()
    with time_machine.travel(start + timedelta(seconds=601) + grace(org) - timedelta(minutes=1), tick=False):
        collect_organization(org)
    assert MountSnapshot.objects.filter(state=SnapshotState.FAILED).exists()
    with time_machine.travel(start + timedelta(seconds=601) + grace(org) + timedelta(minutes=1), tick=False):
        collect_organization(org)
    assert list(MountSnapshot.objects.values_list("mount__name", flat=True)) == ["arrived"]


def test_confirmation_commits_a_blob_that_arrived(client, transport, org, token, queued):
    data, digest = blob()
    answer = offer(client, token, "go-mod", digest, len(data)).json()
    # The PUT's blob_verified is not delivered here (no on_commit run): the polling
    # confirmation must find the blob by itself.
    assert transport.put(answer["URL"], data, answer["Headers"]).status == 200
    snapshot = MountSnapshot.objects.get()
    assert snapshot.state == SnapshotState.PENDING
    assert services.confirm_snapshot_upload(snapshot.pk) == services.VERIFIED
    assert services.confirm_snapshot_upload(snapshot.pk) == services.DONE
    snapshot.refresh_from_db()
    assert snapshot.state == SnapshotState.VERIFIED


def test_a_blob_of_another_size_does_not_commit_the_snapshot(org):
    mount = CacheMount.objects.create(organization=org, name="m")
    snap = MountSnapshot.objects.create(mount=mount, digest="sha256:" + "a" * 64, size=10)
    assert services.commit_snapshots_for_blob(org.pk, snap.digest, 11) == 0
    assert services.commit_snapshots_for_blob(org.pk, snap.digest, 10) == 1
    assert services.commit_snapshots_for_blob(org.pk, snap.digest, 10) == 0


def test_retention_keeps_the_current_and_n_older(client, transport, org, token, settings, django_capture_on_commit_callbacks):
    settings.MOUNT_SNAPSHOTS_KEPT = 2
    digests = []
    for i in range(5):
        data, _ = blob(str(i).encode())
        digests.append(upload(client, transport, token, "go-mod", data, django_capture_on_commit_callbacks))
    live = list(MountSnapshot.objects.current().values_list("digest", flat=True))
    assert live == digests[::-1][:3]
    released = MountSnapshot.objects.filter(released_at__isnull=False)
    assert sorted(released.values_list("digest", flat=True)) == sorted(digests[:2])
    assert config(client, token)["go-mod"]["Digest"] == digests[-1]
    # Released digests go to garbage collection unless a live snapshot still holds them.
    assert services.released_digests(org) == set(digests[:2])
    with django_capture_on_commit_callbacks(execute=True):
        offer(client, token, "other-mount", digests[0], MountSnapshot.objects.get(digest=digests[0]).size)
    assert services.released_digests(org) == {digests[1]}
    assert digests[0] in services.referenced_digests(org)
    # Released snapshots keep their rows and blobs: collection is someone else's call.
    assert blob_services.has_verified_blob(org, digests[0])


def test_config_skips_a_snapshot_whose_blob_is_gone(client, transport, org, token, django_capture_on_commit_callbacks):
    old, old_digest = blob(b"old")
    upload(client, transport, token, "go-mod", old, django_capture_on_commit_callbacks)
    new, new_digest = blob(b"new")
    upload(client, transport, token, "go-mod", new, django_capture_on_commit_callbacks)
    blob_services.delete_blob(org, new_digest)
    entry = config(client, token)["go-mod"]
    assert entry["Digest"] == old_digest
    assert transport.get(entry["URL"]).body == old


@pytest.mark.parametrize("how", ["evicted", "file lost"])
def test_a_current_snapshot_whose_blob_goes_is_released_and_taken_again(
    client, transport, org, token, django_capture_on_commit_callbacks, how
):
    """Evicted (dashboard, retention) or found missing on disk: the mount falls back to
    its older snapshot, and the engine's next offer of the same bytes is not 'unchanged'
    but uploaded, becoming current again."""
    from blobs.storage import get_store

    old, old_digest = blob(b"old")
    upload(client, transport, token, "go-mod", old, django_capture_on_commit_callbacks)
    new, new_digest = blob(b"new")
    upload(client, transport, token, "go-mod", new, django_capture_on_commit_callbacks)
    if how == "evicted":
        blob_services.delete_blob(org, new_digest)
    else:
        get_store().path(org.pk, new_digest).unlink()
        assert blob_services.verified_blob_sizes(org, [new_digest]) == {}
    assert MountSnapshot.objects.get(digest=new_digest).released_at is not None
    assert CacheMount.objects.get().current_snapshot().digest == old_digest
    upload(client, transport, token, "go-mod", new, django_capture_on_commit_callbacks)
    assert config(client, token)["go-mod"]["Digest"] == new_digest


def test_a_current_snapshot_committed_as_its_blob_went_is_not_unchanged(
    client, transport, org, token, django_capture_on_commit_callbacks
):
    """Garbage collection deletes an old unreferenced blob while an engine's offer of the
    same bytes commits a snapshot of it ('already held'): the release on deletion ran
    before that snapshot existed, so it is current with no blob. The engine's next offer
    of those bytes must be uploaded, not answered 'unchanged' forever."""
    data, digest = blob(b"raced")
    upload(client, transport, token, "go-mod", data, django_capture_on_commit_callbacks)
    # The deletion as the committing offer saw it: bytes and row gone, no release.
    from blobs.models import Blob
    from blobs.storage import get_store

    get_store().delete(org.pk, digest)
    Blob.objects.filter(organization=org, digest=digest)._raw_delete(Blob.objects.db)
    assert CacheMount.objects.get().current_snapshot().digest == digest

    upload(client, transport, token, "go-mod", data, django_capture_on_commit_callbacks)
    assert config(client, token)["go-mod"]["Digest"] == digest
    assert transport.get(config(client, token)["go-mod"]["URL"]).body == data


def test_an_upload_in_flight_survives_the_eviction_of_its_pending_blob(
    client, transport, org, token, django_capture_on_commit_callbacks
):
    """A pending blob evicted from the dashboard (or collected) while the engine is still
    PUTting it: the PUT brings the row back, and the snapshot waiting for it must still
    become current rather than arrive released."""
    data, digest = blob(b"in flight")
    with django_capture_on_commit_callbacks(execute=True):
        answer = offer(client, token, "go-mod", digest, len(data)).json()
    assert answer["Skip"] is False
    blob_services.delete_blob(org, digest)
    assert MountSnapshot.objects.get().released_at is None
    with django_capture_on_commit_callbacks(execute=True):
        assert transport.put(answer["URL"], data, answer["Headers"]).status == 200
    assert CacheMount.objects.get().current_snapshot().digest == digest
    assert config(client, token)["go-mod"]["Digest"] == digest


def test_deleting_an_organization_does_not_trip_over_its_snapshots(org, client, transport, token,
                                                                   django_capture_on_commit_callbacks):
    data, _ = blob()
    upload(client, transport, token, "go-mod", data, django_capture_on_commit_callbacks)
    org.delete()
    assert MountSnapshot.objects.count() == 0


# ---- contents -----------------------------------------------------------------------------


def test_index_numbers_match_the_tarball(client, transport, org, token, tmp_path, django_capture_on_commit_callbacks):
    tree = make_tree(tmp_path / "mount")
    upload(client, transport, token, "go-mod", tar_zstd(tree), django_capture_on_commit_callbacks)
    snapshot = MountSnapshot.objects.get()
    indexed = services.index_snapshot_contents(snapshot.pk)
    want = expected_contents(tree)
    snapshot.refresh_from_db()
    assert snapshot.contents_state == ContentsState.COMPLETE
    assert snapshot.file_count == want["files"]
    assert snapshot.uncompressed_bytes == want["total_bytes"]
    assert snapshot.contents["top_level"] == want["top_level"]
    assert snapshot.contents["largest_files"][0] == want["largest_files"][0]
    assert snapshot.contents["symlinks"] == 1
    # Idempotent: a second run (a redelivered task) does not read the blob again.
    again = services.index_snapshot_contents(snapshot.pk)
    assert again.indexed_at == indexed.indexed_at


def test_a_blob_indexed_once_is_not_read_again_for_another_snapshot(
    client, transport, org, token, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    data = tar_zstd(make_tree(tmp_path / "mount"))
    upload(client, transport, token, "go-mod", data, django_capture_on_commit_callbacks)
    first = services.index_snapshot_contents(MountSnapshot.objects.get().pk)
    with django_capture_on_commit_callbacks(execute=True):
        offer(client, token, "go-mod-copy", digest_of(data), len(data))
    copy = MountSnapshot.objects.get(mount__name="go-mod-copy")

    def no_reading(*args, **kwargs):
        raise AssertionError("the blob was read again")

    monkeypatch.setattr(services.contents, "index_blob", no_reading)
    copied = services.index_snapshot_contents(copy.pk)
    assert copied.contents == first.contents
    assert copied.file_count == first.file_count


def test_invalid_snapshot_is_marked_invalid(client, transport, org, token, django_capture_on_commit_callbacks):
    data = zstandard.ZstdCompressor().compress(b"definitely not a tar archive\n" * 100)
    upload(client, transport, token, "junk", data, django_capture_on_commit_callbacks)
    snapshot = services.index_snapshot_contents(MountSnapshot.objects.get().pk)
    assert snapshot.contents_state == ContentsState.INVALID
    assert snapshot.contents["reason"]


def test_bomb_snapshot_is_cut_off_by_the_configured_bounds(
    client, transport, org, token, settings, django_capture_on_commit_callbacks
):
    settings.CONTENTS_INDEX_MAX_BYTES = 32 << 20
    header = tarfile.TarInfo("zeros")
    header.size = 4 << 30
    frame = zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20))
    data = zstandard.ZstdCompressor().compress(header.tobuf()) + frame * 64
    upload(client, transport, token, "bomb", data, django_capture_on_commit_callbacks)
    snapshot = services.index_snapshot_contents(MountSnapshot.objects.get().pk)
    assert snapshot.contents_state == ContentsState.TRUNCATED
    assert snapshot.contents["reason"] == "bytes"
    assert snapshot.contents["stream_bytes"] == 32 << 20


def test_index_of_missing_or_unverified_snapshot_does_nothing(org):
    mount = CacheMount.objects.create(organization=org, name="m")
    pending = MountSnapshot.objects.create(mount=mount, digest="sha256:" + "a" * 64, size=10)
    assert services.index_snapshot_contents(pending.pk) is None
    assert services.index_snapshot_contents(987654) is None
    MountSnapshot.objects.filter(pk=pending.pk).update(state=SnapshotState.VERIFIED)
    # Verified but its blob is not stored (evicted): left unindexed, no error.
    assert services.index_snapshot_contents(pending.pk) is None
    pending.refresh_from_db()
    assert pending.contents_state == ""
