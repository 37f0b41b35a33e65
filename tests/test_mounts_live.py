"""Cache mount sync as an engine does it, against real processes: gunicorn serving the
endpoints (chunked JSON bodies), a real Celery worker on the configured broker committing
and indexing snapshots, and a real S3 store (SeaweedFS)."""

import json
import time

import pytest
import requests

from mounts.models import ContentsState, MountSnapshot, SnapshotState
from tests.mount_archives import digest_of, expected_contents, make_tree, tar_zstd
from tests.s3 import s3_storage, seaweedfs  # noqa: F401
from tests.support import CeleryWorker, basic, chunked_request, engine_request

pytestmark = pytest.mark.django_db(transaction=True)


def engine_call(service, token, path, body):
    """A /magicache call the way the Go client sends it: JSON written through a pipe,
    so chunked, split mid-object."""
    raw = json.dumps(body).encode() + b"\n"
    status, _, reply = chunked_request(
        service.url,
        "GET",
        path,
        {"Authorization": basic(token), "Content-Type": "application/json", "Accept-Encoding": "gzip"},
        [raw[:1], raw[1:]],
    )
    return status, json.loads(reply)


def wait_for(predicate, timeout, what, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    detail = f"\n--- {process.name} log ---\n{process.output()[-4000:]}" if process else ""
    raise AssertionError(f"timed out waiting for {what}{detail}")


def snapshot_in(mount_name, *states):
    return MountSnapshot.objects.filter(mount__name=mount_name, state__in=states).first()


def test_engine_sync_through_gunicorn_and_a_worker(live_service, celery_worker_process, org, token, tmp_path):
    tree = make_tree(tmp_path / "go-mod")
    data = tar_zstd(tree)
    digest = digest_of(data)

    # Shutdown of a first engine: ask, then PUT exactly as the engine does.
    status, answer = engine_call(
        live_service, token, "/magicache/cacheMountUploadURL", {"CacheName": "go-mod", "Digest": digest, "Size": len(data)}
    )
    assert status == 200, answer
    assert answer["Skip"] is False
    assert answer["URL"].startswith(live_service.url + "/")
    put = requests.put(answer["URL"], data=data, headers=answer["Headers"], timeout=30)
    assert put.status_code == 200, put.text
    snapshot = wait_for(lambda: snapshot_in("go-mod", SnapshotState.VERIFIED), 10, "the snapshot to commit", live_service)

    # Start of the next engine: the mount is listed with a URL serving the same bytes.
    status, reply = engine_call(live_service, token, "/magicache/cacheMountConfig", {})
    assert status == 200, reply
    (entry,) = reply["SyncedCacheMounts"]
    assert {k: entry[k] for k in ("Name", "Digest", "Size", "MediaType")} == {
        "Name": "go-mod",
        "Digest": digest,
        "Size": len(data),
        "MediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
    }
    assert requests.get(entry["URL"], timeout=30).content == data
    # The engine's reader re-opens at offsets with Range.
    ranged = requests.get(entry["URL"], headers={"Range": "bytes=1000-"}, timeout=30)
    assert ranged.status_code == 206
    assert ranged.content == data[1000:]

    # The worker indexes what is inside.
    want = expected_contents(tree)
    wait_for(
        lambda: MountSnapshot.objects.filter(pk=snapshot.pk).exclude(contents_state="").exists(),
        30, "the contents index", celery_worker_process,
    )
    snapshot.refresh_from_db()
    assert snapshot.contents_state == ContentsState.COMPLETE
    assert snapshot.file_count == want["files"]
    assert snapshot.uncompressed_bytes == want["total_bytes"]

    # Garbage through the real stack is a JSON 400 that records nothing.
    status, reply = engine_call(
        live_service, token, "/magicache/cacheMountUploadURL", {"CacheName": "", "Digest": digest, "Size": 1}
    )
    assert status == 400 and reply["error"]
    assert not MountSnapshot.objects.filter(mount__name="").exists()

    # An engine that did not change the mount is told to skip.
    status, answer = engine_call(
        live_service, token, "/magicache/cacheMountUploadURL", {"CacheName": "go-mod", "Digest": digest, "Size": len(data)}
    )
    assert (status, answer["Skip"]) == (200, True)


def test_s3_upload_is_confirmed_by_the_worker_or_failed_when_it_never_arrives(
    s3_storage, settings, client, org, token, tmp_path  # noqa: F811
):
    settings.MOUNT_CONFIRM_INTERVAL = 1
    settings.MOUNT_UPLOAD_GRACE = 0
    worker = CeleryWorker(
        **s3_storage.env(prefix=s3_storage.prefix), CACHEWEB_MOUNT_CONFIRM_INTERVAL=1, CACHEWEB_MOUNT_UPLOAD_GRACE=0
    )
    try:
        tree = make_tree(tmp_path / "pnpm")
        data = tar_zstd(tree)
        digest = digest_of(data)
        answer = engine_request(
            client, "GET", "/magicache/cacheMountUploadURL", token=token,
            body={"CacheName": "pnpm-store", "Digest": digest, "Size": len(data)},
        ).json()
        assert answer["Skip"] is False
        assert answer["URL"].startswith(s3_storage.endpoint_url)
        assert "x-amz-checksum-sha256" in answer["Headers"]
        assert snapshot_in("pnpm-store", SnapshotState.PENDING)

        # A second mount whose upload URL expires at once and whose bytes never come.
        settings.BLOB_URL_LIFETIME = 2
        lost, lost_digest = b"never uploaded", digest_of(b"never uploaded")
        lost_answer = engine_request(
            client, "GET", "/magicache/cacheMountUploadURL", token=token,
            body={"CacheName": "lost", "Digest": lost_digest, "Size": len(lost)},
        ).json()
        assert lost_answer["Skip"] is False

        put = requests.put(answer["URL"], data=data, headers=answer["Headers"], timeout=30)
        assert put.status_code == 200, put.text

        snapshot = wait_for(lambda: snapshot_in("pnpm-store", SnapshotState.VERIFIED), 30, "S3 confirmation", worker)
        failed = wait_for(lambda: snapshot_in("lost", SnapshotState.FAILED), 30, "the lost upload to fail", worker)
        assert failed.error
        assert not snapshot_in("lost", SnapshotState.PENDING, SnapshotState.VERIFIED)

        # Indexed by the worker, streaming the object from S3.
        wait_for(
            lambda: MountSnapshot.objects.filter(pk=snapshot.pk).exclude(contents_state="").exists(),
            30, "the contents index", worker,
        )
        snapshot.refresh_from_db()
        assert snapshot.contents_state == ContentsState.COMPLETE
        assert snapshot.file_count == expected_contents(tree)["files"]

        settings.BLOB_URL_LIFETIME = 600
        mounts = {
            m["Name"]: m
            for m in engine_request(client, "GET", "/magicache/cacheMountConfig", token=token, body={}).json()[
                "SyncedCacheMounts"
            ]
        }
        assert mounts["lost"]["URL"] == ""
        assert mounts["pnpm-store"]["Digest"] == digest
        assert requests.get(mounts["pnpm-store"]["URL"], timeout=30).content == data
    finally:
        worker.stop()
