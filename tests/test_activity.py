"""What the engine paths count (activity.Activity), who they count it for, the roll-up into
days, the storage samples and /metrics, through the Django test client."""

import logging
import os
import re
import socket
import threading
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.db import connection
from django.db.models import Sum

from accounts.models import Engine, EngineToken
from activity import services as activity_services
from activity.metrics import render
from activity.models import Activity, Period, StorageSample
from activity.recording import record
from blobs.models import Blob
from blobs.ranges import blob_response
from mounts import tasks as mount_tasks
from mounts.models import CacheMount, MountSnapshot, SnapshotState
from records.models import Result
from tests.blob_helpers import Transport, digest_of, random_blob
from tests.buildkit_oracle import descriptor, key, post_layers, post_records, result, root_key, sha, store_blob
from tests.support import engine_request

pytestmark = pytest.mark.usefixtures("builtin")

IMAGE = root_key(sha("docker-image://alpine"))
METRICS_TOKEN = "metrics-secret-123"


@pytest.fixture(autouse=True)
def no_worker(monkeypatch):
    """Tasks the engine paths queue are not run here (the test is the worker)."""
    monkeypatch.setattr(mount_tasks.confirm_snapshot_upload, "apply_async", lambda *a, **kw: None)
    monkeypatch.setattr(mount_tasks.index_snapshot_contents, "delay", lambda *a, **kw: None)


@pytest.fixture
def commit(django_capture_on_commit_callbacks):
    """Run the test client's calls with their on-commit work done (the counts wait for it)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def totals(org, **filters):
    rows = Activity.objects.filter(organization=org, **filters).values_list("name", "label").annotate(n=Sum("value"))
    return {(name, label) if label else name: n for name, label, n in rows}


def counts(org, **filters):
    """The totals without the latency histogram's rows."""
    return {k: v for k, v in totals(org, **filters).items() if not str(k).startswith(("engine_request", "('engine_request"))}


def config(client, token, engine_id, addr="127.0.0.1"):
    response = engine_request(client, "GET", "/magicache/config", token, {"EngineID": engine_id}, REMOTE_ADDR=addr)
    assert response.status_code == 200
    return Engine.objects.get(engine_id=engine_id)


def chain(org, names):
    descs = []
    for i, name in enumerate(names):
        digest = sha(name)
        store_blob(org, digest, 100 + i)
        descs.append(descriptor(digest, 100 + i))
    return descs


def test_records_and_layers_are_counted_with_refusals_and_the_engine(client, org, token, commit, caplog):
    with commit():
        engine = config(client, token, "runner-1")
        keys = [key(IMAGE, result("ref-1")), key(root_key(sha("other")), result("ref-2"))]
        asked = post_records(client, token, keys, []).json()["ExportRecords"]
        assert len(asked) == 2
        with caplog.at_level(logging.INFO, logger="cacheweb.engine"):
            answer = post_layers(
                client,
                token,
                [
                    {"RecordDigest": asked[0]["Digest"], "Layers": chain(org, ["a", "b"])},
                    {"RecordDigest": asked[1]["Digest"], "Layers": [descriptor(sha("never uploaded"), 5)]},
                    {"RecordDigest": sha("no such record"), "Layers": chain(org, ["c"])},
                    {"RecordDigest": asked[1]["Digest"], "Layers": []},
                ],
            ).json()
    assert len(answer["Accepted"]) == 1 and len(answer["Refused"]) == 3
    assert counts(org) == {
        "records_posts": 1,
        "keys_reported": 2,
        "exports_asked": 2,
        "exports_delivered": 1,
        ("exports_refused", "blob_not_verified"): 1,
        ("exports_refused", "not_a_record"): 1,
        ("exports_refused", "no_layers"): 1,
    }
    # Every call after /config is put down to the engine that made it, and so is the result.
    assert set(Activity.objects.filter(organization=org).values_list("engine_ref", flat=True)) == {engine.pk}
    assert Result.objects.get().engine == engine
    assert "engine=runner-1 " in caplog.text and "endpoint=layers" in caplog.text
    # Each call's latency went into the histogram rows of its endpoint.
    hist = totals(org)
    assert sum(n for k, n in hist.items() if isinstance(k, tuple) and k[0] == "engine_requests") == 3
    assert {k[1].split()[0] for k in hist if isinstance(k, tuple) and k[0] == "engine_requests"} == {
        "config", "records", "layers"
    }


def test_calls_from_an_address_no_engine_was_seen_at_count_as_unattributed(client, org, token, commit, caplog):
    with commit():
        config(client, token, "runner-1", addr="10.0.0.1")
        with caplog.at_level(logging.INFO, logger="cacheweb.engine"):
            post_records(client, token, [key(IMAGE)], [], REMOTE_ADDR="10.0.0.2")
    assert Activity.objects.get(organization=org, name="records_posts").engine_ref == 0
    assert "engine=- " in caplog.text


def test_the_engine_seen_last_with_the_token_and_address_is_the_guess(client, org, token, commit):
    with commit():
        config(client, token, "runner-1")
        second = config(client, token, "runner-2")
        post_records(client, token, [key(IMAGE)], [])
    assert Activity.objects.get(organization=org, name="records_posts").engine_ref == second.pk


def test_a_step_exported_by_another_engine_is_a_shared_step(client, org, token, commit):
    other = EngineToken.issue(org, label="second")[1]
    keys = [key(IMAGE, result("ref-1")), key(root_key(sha("mine")), result("ref-2"))]
    with commit():
        first = config(client, token, "runner-1", addr="10.0.0.1")
        asked = post_records(client, token, keys, [], REMOTE_ADDR="10.0.0.1").json()["ExportRecords"]
        post_layers(
            client, token, [{"RecordDigest": e["Digest"], "Layers": chain(org, [e["Digest"]])} for e in asked],
            REMOTE_ADDR="10.0.0.1",
        )
        # The same engine reporting its own exports again: nothing shared.
        post_records(client, token, keys, [], REMOTE_ADDR="10.0.0.1")
    assert counts(org, engine_ref=first.pk).get("shared_steps") is None
    with commit():
        second = config(client, other, "runner-2", addr="10.0.0.2")
        # Another engine with one of those keys and one of its own: one shared, one asked.
        answer = post_records(
            client, other, [keys[0], key(root_key(sha("new")), result("ref-3"))], [], REMOTE_ADDR="10.0.0.2"
        ).json()
    assert len(answer["ExportRecords"]) == 1
    assert counts(org, engine_ref=second.pk) == {
        "records_posts": 1, "keys_reported": 2, "exports_asked": 1, "shared_steps": 1
    }


def test_blob_calls_count_skips_urls_uploads_and_served_bytes(client, org, token, commit):
    transport = Transport(client)
    data, digest = random_blob(3000)
    with commit():
        answer = engine_request(client, "GET", "/magicache/layerUploadURL", token, {"Digest": digest}).json()
        assert answer["Skip"] is False
        assert transport.put(answer["URL"], data, answer["Headers"]).status == 200
        # Asked again: Skip, and the bytes that saved.
        assert engine_request(client, "GET", "/magicache/layerUploadURL", token, {"Digest": digest}).json()["Skip"]
        url = engine_request(client, "GET", "/magicache/layerDownloadURL", token, {"Digest": digest}).json()["URL"]
        missing = engine_request(client, "GET", "/magicache/layerDownloadURL", token, {"Digest": sha("gone")})
        assert missing.status_code == 404
    path = url.removeprefix("http://testserver")
    with commit():
        # Read through, the test client closes the response (as the WSGI server would).
        assert b"".join(client.get(path).streaming_content) == data
        assert b"".join(client.get(path, HTTP_RANGE="bytes=1000-").streaming_content) == data[1000:]
        assert client.head(path).status_code == 200
    assert counts(org) == {
        "layer_uploads": 1,
        "layer_upload_bytes": 3000,
        "upload_skips": 1,
        "upload_skipped_bytes": 3000,
        "download_urls": 1,
        "served_bytes": 3000 + 2000,
    }


def read_all(sock):
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.once
def test_a_download_cut_short_counts_only_what_left(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(4 * 1024 * 1024))
    sent = []
    # Read through Python (no sendfile): one block of 1 MiB, then the client went away.
    response = blob_response(open(path, "rb"), 4 * 1024 * 1024, None, "GET", '"x"', on_sent=sent.append)
    next(iter(response.streaming_content))
    response.file_to_stream.close()  # what the response's close() does, less request_finished
    # Sent by socket.sendfile, as gunicorn does, from a Range's offset: what it sent.
    response = blob_response(open(path, "rb"), 4 * 1024 * 1024, "bytes=1000-", "GET", '"x"', on_sent=sent.append)
    window = response.file_to_stream
    left, right = socket.socketpair()
    received = []
    reader = threading.Thread(target=lambda: received.append(len(read_all(right))))
    reader.start()
    with left, right:
        left.sendfile(window, offset=1000, count=300_000)
        left.shutdown(socket.SHUT_WR)
        reader.join(10)
        window.close()
    assert received == [300_000]
    assert sent == [1024 * 1024, 300_000]


def test_imports_are_counted_full_and_unchanged(client, org, token, commit):
    with commit():
        first = engine_request(client, "GET", "/magicache/import", token)
        assert first.status_code == 200
        again = engine_request(client, "GET", "/magicache/import", token, HTTP_IF_NONE_MATCH=first["ETag"])
        assert again.status_code == 304
    assert counts(org) == {"imports": 1, ("imports", "unchanged"): 1}


def test_mount_offers_uploads_and_downloads_are_counted(client, org, token, ro_token, commit):
    transport = Transport(client)
    data, digest = random_blob(2000)
    with commit():
        engine = config(client, token, "runner-1")
        offer = {"CacheName": "go-mod", "Digest": digest, "Size": len(data)}
        answer = engine_request(client, "GET", "/magicache/cacheMountUploadURL", token, offer).json()
    with commit():
        assert transport.put(answer["URL"], data, answer["Headers"]).status == 200
    with commit():
        # The same bytes again: unchanged; with a read-only token: read-only.
        assert engine_request(client, "GET", "/magicache/cacheMountUploadURL", token, offer).json()["Skip"]
        assert engine_request(client, "GET", "/magicache/cacheMountUploadURL", ro_token, offer).json()["Skip"]
        mounts = engine_request(client, "GET", "/magicache/cacheMountConfig", token, {}).json()["SyncedCacheMounts"]
    assert [m["Digest"] for m in mounts] == [digest]
    assert counts(org) == {
        "mount_uploads": 1,
        "mount_upload_bytes": 2000,
        ("mount_skips", "unchanged"): 1,
        ("mount_skips", "read-only"): 1,
        "mount_downloads": 1,
        "mount_download_bytes": 2000,
    }
    assert MountSnapshot.objects.get().engine == engine


# ---- roll-up ------------------------------------------------------------------------------


NOW = datetime(2026, 11, 30, 14, 37, tzinfo=dt_timezone.utc)


def test_old_hours_roll_up_into_days_with_the_same_sums(org, commit, settings):
    settings.ACTIVITY_DAYS = 10
    old = NOW - timedelta(days=12)
    with commit():
        for hour in (1, 5, 23):
            record(org.id, {"records_posts": 1, ("evictions", "policy"): 2}, engine_ref=3, at=old.replace(hour=hour))
        record(org.id, {"records_posts": 7}, at=old.replace(hour=2))
        # The day after the cutoff's midnight stays in hours.
        record(org.id, {"records_posts": 4}, engine_ref=3, at=NOW - timedelta(days=9, hours=23))
        record(org.id, {"records_posts": 5}, engine_ref=3, at=NOW)
    before = totals(org)
    metrics_before = render()
    with commit():
        assert activity_services.roll_up(now=NOW) == 3 * 2 + 1
        assert activity_services.roll_up(now=NOW) == 0  # again: nothing left to roll
    assert totals(org) == before
    assert render() == metrics_before
    day = old.replace(hour=0, minute=0)
    rows = {
        (a.engine_ref, a.period, a.start, a.name, a.label): a.value for a in Activity.objects.filter(organization=org)
    }
    assert rows == {
        (3, "day", day, "records_posts", ""): 3,
        (3, "day", day, "evictions", "policy"): 6,
        (0, "day", day, "records_posts", ""): 7,
        (3, "hour", (NOW - timedelta(days=9, hours=23)).replace(minute=0), "records_posts", ""): 4,
        (3, "hour", NOW.replace(minute=0), "records_posts", ""): 5,
    }


def test_roll_up_adds_to_a_day_row_already_there(org, commit, settings):
    settings.ACTIVITY_DAYS = 10
    old = NOW - timedelta(days=30)
    for hour in (3, 20):
        with commit():
            record(org.id, {"imports": hour}, at=old.replace(hour=hour))
        assert activity_services.roll_up(now=NOW) == 1
    (row,) = Activity.objects.filter(organization=org)
    assert (row.period, row.value) == (Period.DAY, 23)


# ---- storage samples ------------------------------------------------------------------------


def test_a_storage_sample_says_what_is_stored_by_kind(client, org, other_org, token, commit):
    with commit():
        config(client, token, "runner-1")
        asked = post_records(client, token, [key(IMAGE, result("ref-1"))], []).json()["ExportRecords"]
        post_layers(client, token, [{"RecordDigest": asked[0]["Digest"], "Layers": chain(org, ["a", "b"])}])
    store_blob(org, sha("loose"), 1000)
    store_blob(org, sha("pending"), 5000, state="pending")
    mount = CacheMount.objects.create(organization=org, name="go-mod")
    store_blob(org, sha("mount"), 700)
    MountSnapshot.objects.create(
        mount=mount, digest=sha("mount"), size=700, state=SnapshotState.VERIFIED, verified_at=NOW
    )
    assert activity_services.take_storage_samples(now=NOW) == 2
    assert activity_services.take_storage_samples(now=NOW + timedelta(minutes=20)) == 0  # same hour
    sample = StorageSample.objects.get(organization=org)
    assert (sample.layer_bytes, sample.mount_bytes, sample.unreferenced_bytes) == (100 + 101, 700, 1000)
    assert (sample.records, sample.results) == (1, 1)
    empty = StorageSample.objects.get(organization=other_org)
    assert (empty.layer_bytes, empty.mount_bytes, empty.unreferenced_bytes, empty.records) == (0, 0, 0, 0)
    assert Blob.objects.filter(organization=org).count() == 5


# ---- /metrics -------------------------------------------------------------------------------


def metric_lines(text):
    return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.splitlines() if not line.startswith("#")}


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    return METRICS_TOKEN


def test_metrics_need_the_token_or_a_superuser(client, org, metrics_token, django_user_model):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics").headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {metrics_token}").status_code == 401
    ok = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}")
    assert ok.status_code == 200 and ok["Content-Type"].startswith("text/plain; version=0.0.4")
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}").status_code == 405
    django_user_model.objects.create_user("someone", password="pw-someone-1")
    client.login(username="someone", password="pw-someone-1")
    assert client.get("/metrics").status_code == 403
    django_user_model.objects.create_superuser("root", password="pw-root-123")
    client.login(username="root", password="pw-root-123")
    assert client.get("/metrics").status_code == 200


def test_metrics_without_a_configured_token_refuse_every_bearer(client, org, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


def test_metrics_values_are_the_activity_sums_and_current_storage(client, org, other_org, token, metrics_token, commit):
    with commit():
        record(org.id, {"layer_uploads": 3, "layer_upload_bytes": 3000, "upload_skips": 2,
                        "upload_skipped_bytes": 200, "download_urls": 4, "served_bytes": 999,
                        "records_posts": 5, "exports_asked": 6, "exports_delivered": 5,
                        "shared_steps": 8, "imports": 1, ("imports", "unchanged"): 2, "mount_uploads": 1,
                        "mount_downloads": 2, ("evictions", "user"): 1, ("evicted_bytes", "user"): 50,
                        ("evictions", "policy"): 4, ("evicted_bytes", "policy"): 4000}, engine_ref=1, at=NOW)
        record(org.id, {"records_posts": 2, ("evictions", "policy"): 1}, engine_ref=2)
        record(org.id, {("engine_requests", "records 0.005"): 2, ("engine_requests", "records 0.25"): 1,
                        ("engine_requests", "records +Inf"): 1, ("engine_request_us", "records"): 31_500_000})
        record(other_org.id, {"records_posts": 1})
    store_blob(org, sha("loose"), 1000)
    values = metric_lines(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}").content.decode())
    expected = {
        "layer_uploads": 3, "layer_upload_bytes": 3000, "upload_skips": 2, "upload_skipped_bytes": 200,
        "download_urls": 4, "served_bytes": 999, "records_posts": 7, "exports_asked": 6, "exports_delivered": 5,
        "shared_steps": 8, "imports": 3, "mount_uploads": 1, "mount_downloads": 2,
    }
    for name, value in expected.items():
        assert values[f'cacheweb_{name}_total{{org="acme"}}'] == str(value), name
    assert values['cacheweb_records_posts_total{org="globex"}'] == "1"
    assert values['cacheweb_layer_uploads_total{org="globex"}'] == "0"
    assert values['cacheweb_evictions_total{org="acme",reason="policy"}'] == "5"
    assert values['cacheweb_evictions_total{org="acme",reason="user"}'] == "1"
    assert values['cacheweb_evicted_bytes_total{org="acme",reason="policy"}'] == "4000"
    assert values['cacheweb_stored_bytes{org="acme",kind="unreferenced"}'] == "1000"
    assert values['cacheweb_stored_bytes{org="acme",kind="layer"}'] == "0"
    assert values['cacheweb_stored_bytes{org="acme",kind="mount"}'] == "0"
    assert values['cacheweb_records{org="acme"}'] == "0" and values['cacheweb_results{org="acme"}'] == "0"
    hist = "cacheweb_engine_request_duration_seconds"
    assert values[f'{hist}_bucket{{org="acme",endpoint="records",le="0.005"}}'] == "2"
    assert values[f'{hist}_bucket{{org="acme",endpoint="records",le="0.1"}}'] == "2"
    assert values[f'{hist}_bucket{{org="acme",endpoint="records",le="0.25"}}'] == "3"
    assert values[f'{hist}_bucket{{org="acme",endpoint="records",le="30.0"}}'] == "3"
    assert values[f'{hist}_bucket{{org="acme",endpoint="records",le="+Inf"}}'] == "4"
    assert values[f'{hist}_count{{org="acme",endpoint="records"}}'] == "4"
    assert values[f'{hist}_sum{{org="acme",endpoint="records"}}'] == "31.5"
    assert not any(re.search(r"[^\x20-\x7e]", line) for line in values)


@pytest.mark.django_db(transaction=True)
def test_roll_ups_running_at_once_count_each_hour_once(settings):
    from accounts.models import Organization

    settings.ACTIVITY_DAYS = 10
    org = Organization.ensure("acme")
    old = (NOW - timedelta(days=40)).replace(hour=0, minute=0)
    for day in range(5):
        for hour in range(0, 24, 3):
            record(org.id, {"records_posts": 1, "served_bytes": 100}, engine_ref=day % 2,
                   at=old + timedelta(days=day, hours=hour))
    record(org.id, {"records_posts": 1}, at=NOW)
    rolled, errors = [], []
    start = threading.Barrier(3)

    def roll():
        try:
            start.wait(10)
            rolled.append(activity_services.roll_up(now=NOW))
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=roll) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == [] and sorted(rolled) == [0, 0, 5 * 8 * 2]
    assert totals(org) == {"records_posts": 5 * 8 + 1, "served_bytes": 5 * 8 * 100}
    assert Activity.objects.filter(organization=org, period=Period.DAY).count() == 5 * 2


def test_a_read_only_tokens_records_post_is_counted_but_its_keys_are_not_read(client, org, ro_token, commit):
    with commit():
        assert post_records(client, ro_token, [key(IMAGE, result("ref-1"))], []).json() == {"ExportRecords": []}
    assert counts(org) == {"records_posts": 1}
