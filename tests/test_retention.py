"""Storage lifecycle: garbage collection of what nothing needs, and opt-in eviction.

Ages are set with time_machine: rows are created in the past, or the pass runs in the
future. Tests that talk to S3 (a real SeaweedFS) only ever move rows into the past,
since the store refuses requests signed at another time than its own."""

import io
import os
from datetime import timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.utils import timezone

from blobs import services as blob_services
from blobs.models import Blob, BlobState
from blobs.storage import get_store
from cacheweb.celery import app as celery_app
from mounts.models import CacheMount, MountSnapshot, SnapshotState
from records.models import Layer, PendingExport, Record
from retention import services, tasks
from retention.services import (
    FAILED_SNAPSHOTS,
    OVER_LIMIT_BLOBS,
    PENDING_EXPORTS,
    RELEASED_SNAPSHOTS,
    UNREFERENCED_BLOBS,
    UNUSED_BLOBS,
    collect_garbage,
)
from tests.blob_helpers import Transport, digest_of, stored, upload_url
from tests.buildkit_oracle import descriptor, get_import, key, post_layers, post_records, result, root_key, sha
from tests.s3 import s3_storage, seaweedfs  # noqa: F401,F811
from tests.support import engine_request

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


pytestmark = pytest.mark.usefixtures("fresh_use_counts")


@pytest.fixture(params=["filesystem", "s3"])
def storage(request):
    """Each test that takes it runs on both stores."""
    request.getfixturevalue("s3_storage" if request.param == "s3" else "builtin")
    return request.param


def grace(org):
    return services.grace(org)


def make_blob(org, size=1000, state=BlobState.VERIFIED, age=timedelta(0), used=None):
    """A blob as an upload leaves it, made `age` ago: verified ones have their bytes in
    the configured store (a pending blob's bytes never arrived). Last used `used` ago
    when given."""
    data = os.urandom(size)
    digest = digest_of(data)
    if state == BlobState.VERIFIED:
        store = get_store()
        if store.kind == "filesystem":
            path = store.path(org.pk, digest)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            store.client.put_object(Bucket=store.bucket, Key=store.key(org.pk, digest), Body=data)
    with time_machine.travel(timezone.now() - age, tick=False):
        Blob.objects.create(
            organization=org,
            digest=digest,
            size=size,
            state=state,
            verified_at=timezone.now() if state == BlobState.VERIFIED else None,
        )
    if used is not None:
        Blob.objects.filter(organization=org, digest=digest).update(last_used_at=timezone.now() - used)
    return digest


def make_layer(org, digest):
    return Layer.objects.create(
        organization=org,
        digest=digest,
        media_type="application/vnd.oci.image.layer.v1.tar+zstd",
        size=1000,
        diff_id=sha("diff " + digest),
    )


def make_snapshot(org, digest, name="go-mod", state=SnapshotState.VERIFIED, age=timedelta(0), released=None, failed=None):
    """A snapshot of mount `name` made `age` ago, released or failed that long ago when given."""
    mount, _ = CacheMount.objects.get_or_create(organization=org, name=name)
    now = timezone.now()
    return MountSnapshot.objects.create(
        mount=mount,
        digest=digest,
        size=1000,
        state=state,
        created_at=now - age,
        verified_at=now - age if state == SnapshotState.VERIFIED else None,
        released_at=now - released if released is not None else None,
        failed_at=now - failed if failed is not None else None,
    )


def make_pending_export(org, name, age):
    record = Record.objects.create(organization=org, identity=sha(name), digest=sha(name))
    return PendingExport.objects.create(
        record=record, cache_ref_id=name, result_created_at=timezone.now(), asked_at=timezone.now() - age
    )


def blob_exists(org, digest):
    return Blob.objects.filter(organization=org, digest=digest).exists()


def run_gc(*args):
    out = io.StringIO()
    call_command("gc", *args, stdout=out)
    return out.getvalue()


# ---- garbage collection -----------------------------------------------------------------


def test_unreferenced_old_blobs_go_young_and_referenced_ones_stay(storage, org):
    old = grace(org) + MINUTE
    gone_verified = make_blob(org, age=old)
    gone_pending = make_blob(org, state=BlobState.PENDING, age=old)
    young = make_blob(org, age=grace(org) - MINUTE)
    young_pending = make_blob(org, state=BlobState.PENDING, age=grace(org) - MINUTE)
    used_lately = make_blob(org, age=30 * DAY, used=grace(org) - MINUTE)
    in_a_layer = make_blob(org, age=30 * DAY)
    make_layer(org, in_a_layer)
    in_a_snapshot = make_blob(org, age=30 * DAY)
    make_snapshot(org, in_a_snapshot, age=30 * DAY)
    uploading_snapshot = make_blob(org, state=BlobState.PENDING, age=old)
    make_snapshot(org, uploading_snapshot, name="pnpm", state=SnapshotState.PENDING, age=old)

    [report] = collect_garbage()

    assert not blob_exists(org, gone_verified) and not stored(org, gone_verified)
    assert not blob_exists(org, gone_pending)
    for digest in (young, used_lately, in_a_layer, in_a_snapshot):
        assert blob_exists(org, digest) and stored(org, digest), digest
    assert blob_exists(org, young_pending) and blob_exists(org, uploading_snapshot)
    assert report.counts[UNREFERENCED_BLOBS] == 2
    # Only verified bytes are freed: the pending blob's announced bytes never arrived.
    assert report.bytes[UNREFERENCED_BLOBS] == 1000
    assert report.kept == 0 and report.error == ""


def test_blob_whose_bytes_are_already_gone_is_deleted_without_error(storage, org):
    digest = make_blob(org, age=grace(org) + MINUTE)
    get_store().delete(org.pk, digest)
    [report] = collect_garbage()
    assert not blob_exists(org, digest)
    assert report.counts[UNREFERENCED_BLOBS] == 1 and report.kept == 0


def test_grace_is_url_lifetime_plus_export_timeout_at_least(org, settings):
    settings.BLOB_URL_LIFETIME = 6 * 3600
    org.export_timeout = 1200
    assert grace(org) == timedelta(seconds=6 * 3600 + 1200)
    settings.GC_GRACE = 3600  # shorter than uploads in flight may need: not taken
    assert grace(org) == timedelta(seconds=6 * 3600 + 1200)
    settings.GC_GRACE = 2 * 86400
    assert grace(org) == timedelta(days=2)


def test_grace_follows_the_organizations_export_timeout(builtin, org, settings):
    org.export_timeout = 3 * 3600
    org.save()
    digest = make_blob(org)
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.BLOB_URL_LIFETIME + 3 * 3600) - MINUTE):
        collect_garbage()
        assert blob_exists(org, digest)
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.BLOB_URL_LIFETIME + 3 * 3600) + MINUTE):
        collect_garbage()
        assert not blob_exists(org, digest)


def test_released_snapshot_goes_after_the_grace_and_its_blob_with_it(builtin, org):
    digest = make_blob(org)
    snapshot = make_snapshot(org, digest, released=timedelta(0))
    start = timezone.now()
    collect_garbage()
    assert MountSnapshot.objects.filter(pk=snapshot.pk).exists() and blob_exists(org, digest)
    with time_machine.travel(start + grace(org) - MINUTE):
        collect_garbage()
        assert MountSnapshot.objects.filter(pk=snapshot.pk).exists() and blob_exists(org, digest)
    with time_machine.travel(start + grace(org) + MINUTE):
        [report] = collect_garbage()
    assert not MountSnapshot.objects.filter(pk=snapshot.pk).exists()
    assert not blob_exists(org, digest) and not stored(org, digest)
    assert report.counts[RELEASED_SNAPSHOTS] == 1 and report.counts[UNREFERENCED_BLOBS] == 1


def test_blob_shared_by_a_released_and_a_current_snapshot_stays(builtin, org):
    digest = make_blob(org, age=30 * DAY)
    released = make_snapshot(org, digest, name="go-mod", age=30 * DAY, released=20 * DAY)
    current = make_snapshot(org, digest, name="go-mod-copy", age=30 * DAY)
    [report] = collect_garbage()
    assert not MountSnapshot.objects.filter(pk=released.pk).exists()
    assert MountSnapshot.objects.filter(pk=current.pk).exists()
    assert blob_exists(org, digest) and stored(org, digest)
    assert report.counts[RELEASED_SNAPSHOTS] == 1 and report.counts[UNREFERENCED_BLOBS] == 0


def test_failed_snapshots_go_after_the_grace_then_their_pending_blob(builtin, org):
    old = grace(org) + MINUTE
    old_blob = make_blob(org, state=BlobState.PENDING, age=old)
    old_failure = make_snapshot(org, old_blob, state=SnapshotState.FAILED, age=old, failed=old)
    recent_blob = make_blob(org, state=BlobState.PENDING)
    recent_failure = make_snapshot(org, recent_blob, name="pnpm", state=SnapshotState.FAILED, failed=timedelta(0))
    [report] = collect_garbage()
    assert not MountSnapshot.objects.filter(pk=old_failure.pk).exists() and not blob_exists(org, old_blob)
    assert MountSnapshot.objects.filter(pk=recent_failure.pk).exists() and blob_exists(org, recent_blob)
    assert report.counts[FAILED_SNAPSHOTS] == 1


def test_pending_exports_go_after_twice_the_retry_back_off(builtin, org, settings):
    settings.EXPORT_RETRY_AFTER = 3600
    stale = make_pending_export(org, "stale", timedelta(hours=2) + MINUTE)
    waiting = make_pending_export(org, "waiting", timedelta(hours=2) - MINUTE)
    [report] = collect_garbage()
    assert not PendingExport.objects.filter(pk=stale.pk).exists()
    assert PendingExport.objects.filter(pk=waiting.pk).exists()
    assert Record.objects.filter(organization=org).count() == 2  # only the requests go
    assert report.counts[PENDING_EXPORTS] == 1


def test_work_in_batches_gets_everything(builtin, org, monkeypatch):
    monkeypatch.setattr(services, "BATCH", 2)
    old = grace(org) + MINUTE
    gone = [make_blob(org, age=old) for _ in range(5)]
    kept = make_blob(org, age=old)
    make_layer(org, kept)
    for n in range(3):
        make_snapshot(org, sha(f"released {n}"), name=f"m{n}", released=old)
    [report] = collect_garbage()
    assert not any(blob_exists(org, digest) for digest in gone)
    assert blob_exists(org, kept)
    assert report.counts[UNREFERENCED_BLOBS] == 5 and report.counts[RELEASED_SNAPSHOTS] == 3


# ---- eviction ---------------------------------------------------------------------------


def referenced_blob(org, **kwargs):
    """A blob a layer uses: never garbage, only eviction removes it."""
    digest = make_blob(org, **kwargs)
    make_layer(org, digest)
    return digest


def test_eviction_is_off_by_default(builtin, org):
    digest = referenced_blob(org, age=400 * DAY, used=300 * DAY)
    [report] = collect_garbage()
    assert blob_exists(org, digest)
    assert report.counts[UNUSED_BLOBS] == report.counts[OVER_LIMIT_BLOBS] == 0


def test_blobs_unused_for_the_configured_days_are_evicted(storage, org, settings):
    settings.EVICT_UNUSED_AFTER = 30
    used_long_ago = referenced_blob(org, age=60 * DAY, used=31 * DAY)
    never_used = referenced_blob(org, age=40 * DAY)
    used_lately = referenced_blob(org, age=60 * DAY, used=29 * DAY)
    old_but_used_yesterday = referenced_blob(org, age=400 * DAY, used=DAY)
    new = referenced_blob(org, age=DAY)
    [report] = collect_garbage()
    for digest in (used_long_ago, never_used):
        assert not blob_exists(org, digest) and not stored(org, digest)
    for digest in (used_lately, old_but_used_yesterday, new):
        assert blob_exists(org, digest) and stored(org, digest)
    assert report.counts[UNUSED_BLOBS] == 2 and report.bytes[UNUSED_BLOBS] == 2000


def test_a_blob_uploaded_again_after_its_last_download_counts_from_the_upload(builtin, org, settings):
    """Its bytes were lost (verifyblobs, a restored disk) and an engine uploaded them again
    yesterday: that upload is a use, however long ago the last download was."""
    settings.EVICT_UNUSED_AFTER = 30
    digest = referenced_blob(org, age=60 * DAY, used=31 * DAY)
    Blob.objects.filter(organization=org, digest=digest).update(verified_at=timezone.now() - DAY)
    [report] = collect_garbage()
    assert blob_exists(org, digest) and stored(org, digest)
    assert report.counts[UNUSED_BLOBS] == 0


def test_over_the_storage_limit_least_recently_used_go_first(builtin, org, settings, monkeypatch):
    monkeypatch.setattr(services, "BATCH", 2)
    settings.ORG_STORAGE_LIMIT = 2500
    b_never_used = referenced_blob(org, age=10 * DAY)
    a_three_days = referenced_blob(org, age=20 * DAY, used=3 * DAY)
    d_two_days = referenced_blob(org, age=20 * DAY, used=2 * DAY)
    c_an_hour = referenced_blob(org, age=20 * DAY, used=timedelta(hours=1))
    uploading = make_blob(org, state=BlobState.PENDING, size=50_000, age=20 * DAY)  # no bytes held yet
    make_layer(org, uploading)
    [report] = collect_garbage()
    assert not blob_exists(org, b_never_used) and not blob_exists(org, a_three_days)
    assert blob_exists(org, d_two_days) and blob_exists(org, c_an_hour) and blob_exists(org, uploading)
    assert report.counts[OVER_LIMIT_BLOBS] == 2 and report.bytes[OVER_LIMIT_BLOBS] == 2000
    [again] = collect_garbage()  # at 2000 of 2500 bytes: nothing more
    assert again.counts[OVER_LIMIT_BLOBS] == 0


def test_a_pass_running_beside_another_evicts_no_more_than_the_limit_asks(builtin, org, settings, monkeypatch):
    """Two passes at once (`manage.py gc` during the scheduled one, or a pass outlasting
    the interval): one evicts the least recently used blobs after the other has read the
    organization's total. The other must not evict as much again."""
    settings.ORG_STORAGE_LIMIT = 2500
    oldest, older, newer, newest = (referenced_blob(org, age=20 * DAY, used=days * DAY) for days in (4, 3, 2, 1))
    real_blobs = services._blobs
    calls = []

    def other_pass_evicts_meanwhile(organization, cutoff):
        calls.append(cutoff)
        if len(calls) == 2:  # the eviction's listing: the total was read just before
            for digest in (oldest, older):
                blob_services.delete_blob(organization, digest)
        return real_blobs(organization, cutoff)

    monkeypatch.setattr(services, "_blobs", other_pass_evicts_meanwhile)
    [report] = collect_garbage()
    assert len(calls) == 2
    assert blob_exists(org, newer) and blob_exists(org, newest)
    assert report.counts[OVER_LIMIT_BLOBS] == 0


def test_equal_last_uses_across_batches(builtin, org, settings, monkeypatch):
    monkeypatch.setattr(services, "BATCH", 2)
    with time_machine.travel(timezone.now() - 5 * DAY, tick=False):
        same_time = [referenced_blob(org) for _ in range(5)]
    by_age = sorted(same_time, key=lambda digest: Blob.objects.get(digest=digest).pk)
    settings.EVICT_UNUSED_AFTER = 1
    [dry] = collect_garbage(dry_run=True)
    assert dry.counts[UNUSED_BLOBS] == 5  # each one once, across three batches
    settings.EVICT_UNUSED_AFTER = 0
    settings.ORG_STORAGE_LIMIT = 2000
    [report] = collect_garbage()
    assert report.counts[OVER_LIMIT_BLOBS] == 3
    # Ties go by row id: the first created go.
    assert [blob_exists(org, digest) for digest in by_age] == [False, False, False, True, True]


def test_one_import_rebuild_per_eviction_batch(builtin, org, settings, django_capture_on_commit_callbacks, monkeypatch):
    """Evicting blobs that results use marks them lost once per batch: one rebuild of the
    import, not one per blob."""
    from records.models import Result, ResultLayer

    settings.EVICT_UNUSED_AFTER = 30
    for n in range(3):
        record = Record.objects.create(organization=org, identity=sha(f"r{n}"), digest=sha(f"r{n}"), has_result=True)
        result_row = Result.objects.create(record=record, chain=sha(f"chain {n}"), created_at=timezone.now())
        layer = make_layer(org, make_blob(org, age=40 * DAY))
        ResultLayer.objects.create(result=result_row, position=0, layer=layer)
    queued = []
    monkeypatch.setattr("records.tasks.rebuild_import.apply_async", lambda args, **kw: queued.append(args[0]))
    with django_capture_on_commit_callbacks(execute=True):
        [report] = collect_garbage()
    assert report.counts[UNUSED_BLOBS] == 3
    assert queued == [org.pk]
    assert not Record.objects.filter(has_result=True).exists()
    assert not Result.objects.filter(complete=True).exists()


def test_evicted_layer_leaves_the_import_and_is_asked_for_again(builtin, client, org, token, settings):
    """Through the engine endpoints: an evicted layer's result is no longer imported, and
    the next /records asks the engine to export that record again."""
    image = root_key(sha("docker-image://alpine"))
    keys = [key(image, result("ref-1"))]
    [asked] = post_records(client, token, keys, []).json()["ExportRecords"]
    data = os.urandom(3000)
    digest = digest_of(data)
    answer = upload_url(client, token, digest).json()
    assert Transport(client).put(answer["URL"], data, answer["Headers"]).status == 200
    body = post_layers(client, token, [{"RecordDigest": asked["Digest"], "Layers": [descriptor(digest, len(data))]}])
    assert body.json()["Accepted"] == [asked["Digest"]]
    assert [layer["blob"] for layer in get_import(client, token)["layers"]] == [digest]

    settings.EVICT_UNUSED_AFTER = 30
    with time_machine.travel(timezone.now() + 31 * DAY):
        assert post_records(client, token, keys, []).json()["ExportRecords"] == []
        [report] = collect_garbage()
        assert report.counts[UNUSED_BLOBS] == 1
        assert not stored(org, digest)
        config = get_import(client, token)
        assert config["layers"] == []
        assert all(not record.get("layers") for record in config["records"])
        again = post_records(client, token, keys, []).json()["ExportRecords"]
        assert [entry["CacheRefID"] for entry in again] == ["ref-1"]
        # The engine uploads it again and the import heals.
        answer = upload_url(client, token, digest).json()
        assert answer["Skip"] is False
        assert Transport(client).put(answer["URL"], data, answer["Headers"]).status == 200
        post_layers(client, token, [{"RecordDigest": asked["Digest"], "Layers": [descriptor(digest, len(data))]}])
        assert [layer["blob"] for layer in get_import(client, token)["layers"]] == [digest]


def test_evicted_mount_snapshot_is_released_and_uploaded_again(builtin, client, org, token, settings, monkeypatch):
    from mounts import tasks as mount_tasks

    monkeypatch.setattr(mount_tasks.confirm_snapshot_upload, "apply_async", lambda *args, **kwargs: None)
    monkeypatch.setattr(mount_tasks.index_snapshot_contents, "apply_async", lambda *args, **kwargs: None)
    digest = make_blob(org, age=40 * DAY)
    snapshot = make_snapshot(org, digest, age=40 * DAY)
    settings.EVICT_UNUSED_AFTER = 30
    collect_garbage()
    snapshot.refresh_from_db()
    assert snapshot.released_at is not None and not blob_exists(org, digest)
    config = engine_request(client, "GET", "/magicache/cacheMountConfig", token, {}).json()
    assert config["SyncedCacheMounts"] == [{"Name": "go-mod", "Digest": "", "Size": 0, "MediaType": "", "URL": ""}]
    offer = {"CacheName": "go-mod", "Digest": digest, "Size": 1000}
    answer = engine_request(client, "GET", "/magicache/cacheMountUploadURL", token, offer).json()
    assert answer["Skip"] is False and answer["URL"]


# ---- dry run, scope, the task and the command ------------------------------------------


def lifecycle_fixture(org):
    """One of everything the pass deletes, plus blobs only the storage limit can evict."""
    old = grace(org) + MINUTE
    make_snapshot(org, sha("released"), released=old)
    make_snapshot(org, sha("failed"), name="pnpm", state=SnapshotState.FAILED, age=old, failed=old)
    make_pending_export(org, "stale", 30 * DAY)
    garbage = make_blob(org, size=1500, age=20 * DAY)  # unreferenced and the least recently used
    lru = [referenced_blob(org, age=20 * DAY, used=(10 - n) * DAY) for n in range(3)]
    return garbage, lru


def test_dry_run_deletes_nothing_and_predicts_the_real_pass(builtin, org, settings):
    settings.ORG_STORAGE_LIMIT = 2000
    garbage, lru = lifecycle_fixture(org)  # 1500 bytes of garbage, then 3 x 1000 in use
    before = (
        set(Blob.objects.values_list("digest", flat=True)),
        MountSnapshot.objects.count(),
        PendingExport.objects.count(),
    )
    [dry] = collect_garbage(dry_run=True)
    after = (
        set(Blob.objects.values_list("digest", flat=True)),
        MountSnapshot.objects.count(),
        PendingExport.objects.count(),
    )
    assert after == before
    assert all(stored(org, digest) for digest in [garbage, *lru])
    [real] = collect_garbage()
    assert dry.dry_run and not real.dry_run
    assert dry.counts == real.counts and dry.bytes == real.bytes
    # The unreferenced blob is counted once, as garbage; then one more goes for the limit.
    assert real.counts == {
        RELEASED_SNAPSHOTS: 1,
        FAILED_SNAPSHOTS: 1,
        PENDING_EXPORTS: 1,
        UNREFERENCED_BLOBS: 1,
        UNUSED_BLOBS: 0,
        OVER_LIMIT_BLOBS: 1,
    }
    assert not blob_exists(org, garbage) and not blob_exists(org, lru[0])
    assert blob_exists(org, lru[1]) and blob_exists(org, lru[2])


def _state(org):
    """What the pass can delete, by key: snapshot and export pks, blob digests."""
    return (
        set(MountSnapshot.objects.filter(mount__organization=org).values_list("pk", flat=True)),
        set(PendingExport.objects.filter(record__organization=org).values_list("pk", flat=True)),
        set(Blob.objects.filter(organization=org).values_list("digest", flat=True)),
    )


def _listed(report):
    snapshots = {s.pk for kind in (RELEASED_SNAPSHOTS, FAILED_SNAPSHOTS) for s in report.items[kind]}
    exports = {e.pk for e in report.items[PENDING_EXPORTS]}
    blobs = {b.digest for kind in (UNREFERENCED_BLOBS, UNUSED_BLOBS, OVER_LIMIT_BLOBS) for b in report.items[kind]}
    return snapshots, exports, blobs


def test_preview_lists_the_objects_and_the_pass_deletes_exactly_those(builtin, org, other_org, settings):
    settings.ORG_STORAGE_LIMIT = 2000
    settings.EVICT_UNUSED_AFTER = 15
    garbage, lru = lifecycle_fixture(org)
    stale_layer_blob = referenced_blob(org, size=700, age=40 * DAY, used=30 * DAY)  # evicted as unused
    young = make_blob(org, age=MINUTE)  # unreferenced but within the grace: kept
    lifecycle_fixture(other_org)
    before = _state(org)

    plan = services.preview(org, limit=None)
    assert plan.dry_run and _state(org) == before
    assert plan.policy.enabled and "15 day(s)" in plan.policy.describe()
    # Real objects, in the order the pass takes them.
    assert [type(item).__name__ for item in plan.items[RELEASED_SNAPSHOTS]] == ["MountSnapshot"]
    assert [e.cache_ref_id for e in plan.items[PENDING_EXPORTS]] == ["stale"]
    assert [b.digest for b in plan.items[UNREFERENCED_BLOBS]] == [garbage]
    assert [b.digest for b in plan.items[UNUSED_BLOBS]] == [stale_layer_blob]
    assert [b.digest for b in plan.items[OVER_LIMIT_BLOBS]] == lru[:2]
    assert all(plan.unlisted(kind) == 0 for kind in plan.counts)
    assert young not in _listed(plan)[2]

    [real] = collect_garbage(org, item_limit=None)
    after = _state(org)
    deleted = tuple(b - a for b, a in zip(before, after))
    assert deleted == _listed(plan) == _listed(real)
    assert real.counts == plan.counts and real.bytes == plan.bytes
    assert young in after[2] and lru[2] in after[2]


def test_preview_limit_keeps_counts_whole(builtin, org):
    old = grace(org) + MINUTE
    digests = [make_blob(org, age=old) for _ in range(5)]
    plan = services.preview(org, limit=2)
    assert plan.counts[UNREFERENCED_BLOBS] == 5 and plan.bytes[UNREFERENCED_BLOBS] == 5000
    assert [b.digest for b in plan.items[UNREFERENCED_BLOBS]] == sorted(
        digests, key=lambda d: Blob.objects.get(digest=d).pk
    )[:2]
    assert plan.unlisted(UNREFERENCED_BLOBS) == 3
    assert all(blob_exists(org, d) for d in digests)


def test_scheduled_pass_keeps_no_items(builtin, org):
    make_blob(org, age=grace(org) + MINUTE)
    [report] = collect_garbage()
    assert report.counts[UNREFERENCED_BLOBS] == 1 and report.items[UNREFERENCED_BLOBS] == []


def test_other_organizations_are_untouched(builtin, org, other_org, settings):
    old = grace(org) + MINUTE
    settings.ORG_STORAGE_LIMIT = 1500
    garbage, lru = lifecycle_fixture(org)
    other_garbage, other_lru = lifecycle_fixture(other_org)
    # The same bytes in both: acme's copy is garbage, globex's is used by a layer.
    shared = make_blob(org, age=old)
    Blob.objects.create(organization=other_org, digest=shared, size=1000, state=BlobState.VERIFIED)
    make_layer(other_org, shared)
    # A layer of acme's does not protect globex's blob.
    exposed = make_blob(other_org, age=old)
    make_layer(org, exposed)

    run_gc("--org", "acme")
    assert not blob_exists(org, garbage) and not blob_exists(org, shared)
    for digest in (other_garbage, *other_lru, shared, exposed):
        assert blob_exists(other_org, digest)
    assert MountSnapshot.objects.filter(mount__organization=other_org).count() == 2
    assert PendingExport.objects.filter(record__organization=other_org).count() == 1

    reports = {report.organization: report for report in collect_garbage()}
    assert reports["globex"].counts[UNREFERENCED_BLOBS] == 2  # its garbage, and `exposed`
    assert blob_exists(other_org, shared)
    # Each organization is held to the limit on its own: globex's 4000 bytes down to 1000.
    assert reports["globex"].counts[OVER_LIMIT_BLOBS] == 3
    assert reports["acme"].counts[OVER_LIMIT_BLOBS] == 0


def test_the_celery_task_runs_the_pass_and_beat_schedules_it(builtin, org, settings, monkeypatch):
    digest = make_blob(org, age=grace(org) + MINUTE)
    entry = celery_app.conf.beat_schedule["retention-gc"]
    assert entry["task"] == tasks.collect_garbage.name
    assert entry["schedule"] == settings.GC_INTERVAL
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    celery_app.tasks[entry["task"]].delay()
    assert not blob_exists(org, digest)


def test_command_prints_per_organization_and_dry_run_keeps_everything(builtin, org, other_org):
    digest = make_blob(org, size=4096, age=grace(org) + MINUTE)
    out = run_gc("--dry-run")
    assert "acme: would delete" in out and "globex: would delete" in out
    assert "unreferenced blobs" in out and "4096 bytes (4.0 KB)" in out
    assert blob_exists(org, digest)
    out = run_gc("--org", "acme")
    assert "acme: deleted" in out and "globex" not in out
    lines = [line for line in out.splitlines() if "unreferenced blobs" in line]
    assert lines and lines[0].split()[2:5] == ["1", "4096", "bytes"]
    assert not blob_exists(org, digest)
    with pytest.raises(CommandError):
        run_gc("--org", "nope")


def test_dry_run_command_lists_items_states_policy_and_logs_no_copy(builtin, org, settings, caplog):
    old = grace(org) + MINUTE
    digests = [make_blob(org, size=2000 + n, age=old) for n in range(4)]
    snapshot = make_snapshot(org, sha("released"), name="go-mod", released=old)
    with caplog.at_level("INFO", logger="cacheweb.retention"):
        out = run_gc("--dry-run", "--limit", "3")
    assert out.splitlines()[0].startswith("eviction off")
    listed = [d for d in digests if d in out]
    assert len(listed) == 3
    assert "... and 1 more" in out
    assert f"snapshot {snapshot.pk} of mount 'go-mod'" in out
    assert not [r for r in caplog.records if r.name == "cacheweb.retention"]
    assert all(blob_exists(org, d) for d in digests)

    settings.ORG_STORAGE_LIMIT = 10_000
    settings.EVICT_UNUSED_AFTER = 30
    out = run_gc("--dry-run", "--org", "acme")
    assert out.splitlines()[0] == (
        "eviction on: blobs not used for 30 day(s); least recently used blobs above 10000 bytes per organization"
    )
    assert all(d in out for d in digests) and "more" not in out

    with caplog.at_level("INFO", logger="cacheweb.retention"):
        out = run_gc("--org", "acme")
    assert "acme: deleted" in out and all(d in out for d in digests)
    assert not any(blob_exists(org, d) for d in digests)
    # The command's table is the record of its pass; the scheduled pass logs one line.
    assert not [r for r in caplog.records if r.name == "cacheweb.retention"]
    make_blob(org, age=old)
    with caplog.at_level("INFO", logger="cacheweb.retention"):
        collect_garbage()
    summaries = [r.getMessage() for r in caplog.records if r.name == "cacheweb.retention"]
    assert len(summaries) == 1 and "gc org=acme dry_run=False" in summaries[0]
    assert "unreferenced_blobs=1 " in summaries[0]


def test_unreachable_store_keeps_blobs_and_rows(seaweedfs, settings, org, monkeypatch):  # noqa: F811
    """S3 down: nothing half-deleted, no exception; after a few failures in a row the
    pass stops trying this organization's blobs until the next run."""
    from tests.support import free_port

    storage = seaweedfs.blob_storage("down")
    storage["OPTIONS"]["endpoint_url"] = f"http://127.0.0.1:{free_port()}"
    settings.STORAGES = {**settings.STORAGES, "blobs": storage}
    monkeypatch.setattr(services, "STORE_FAILURES_TO_GIVE_UP", 2)
    digests = [make_blob(org, state=BlobState.PENDING, age=grace(org) + MINUTE) for _ in range(4)]
    [report] = collect_garbage()
    assert report.error == ""
    assert all(blob_exists(org, digest) for digest in digests)
    assert report.kept == 2 and report.counts[UNREFERENCED_BLOBS] == 0


def test_gc_says_so_when_there_is_no_organization(db):
    assert run_gc("--dry-run").splitlines() == [
        "eviction off (neither CACHEWEB_EVICT_UNUSED_AFTER nor CACHEWEB_ORG_STORAGE_LIMIT is set)",
        "no organizations yet: nothing to collect",
    ]
