"""Faults: PostgreSQL, Redis or the S3 store cut, paused or black-holed (tests/faultproxy.py
between the live service and it) while engines call. Every answer during the fault is a
200 or a JSON 503 with Retry-After, within a few seconds; never a 500, a hang or HTML on a
blob URL. Afterwards the service recovers by itself, simulated engines run clean, and
/import holds every result the service accepted, with every blob downloadable.

The web service's waits are configured short here (FAST); the worker talks to the
dependencies directly: its recovery is tested elsewhere. The PostgreSQL and Redis tests
need the scaled-out configuration and run only in CI's scaled-out pass; the S3 one does not
depend on the database and runs once. Embedded faults (SQLite busy, the filesystem
broker's directory unusable) are at the end."""

import gzip
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from django.conf import settings
from django.db import connection

from enginesim.scenarios import RunOptions, run
from tests.faultproxy import FaultProxy
from tests.s3 import seaweedfs  # noqa: F401  (fixture)
from tests.support import CeleryWorker, LiveService, basic, database_url_for_children

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {
    "CACHEWEB_DB_CONNECT_TIMEOUT": 2,
    "CACHEWEB_DB_STATEMENT_TIMEOUT": 5,
    "CACHEWEB_DB_KEEPALIVE_IDLE": 2,
    "CACHEWEB_SQLITE_BUSY_TIMEOUT": 1,
    "CACHEWEB_S3_CONNECT_TIMEOUT": 1,
    "CACHEWEB_S3_READ_TIMEOUT": 2,
    "CACHEWEB_S3_MAX_ATTEMPTS": 1,
    "CACHEWEB_BROKER_TIMEOUT": 1,
    "CACHEWEB_BROKER_PUBLISH_RETRIES": 0,
    "CACHEWEB_RETRY_AFTER": 2,
    "CACHEWEB_WEB_THREADS": 16,
    "CACHEWEB_ACCESS_LOG": 1,
}
# Longest an answer may take while a dependency fails, with FAST's timeouts.
LIMIT = 6.0
RECOVERY = 30.0
RETRYABLE = {200, 503}


def postgres_only():
    return pytest.mark.skipif(
        connection.vendor != "postgresql", reason="needs PostgreSQL: CI's scaled-out pass runs it"
    )


# ---- what engines call during a fault ---------------------------------------------------


class Answer:
    def __init__(self, name, status, headers, body, seconds):
        self.name, self.status, self.headers, self.body, self.seconds = name, status, headers, body, seconds

    def __repr__(self):
        return f"{self.name}: {self.status} in {self.seconds:.1f}s {self.body[:160]!r}"


def call(name, method, url, **kw):
    started = time.monotonic()
    try:
        resp = requests.request(method, url, timeout=LIMIT + 20, **kw)
    except requests.RequestException as exc:
        return Answer(name, f"transport error {type(exc).__name__}", {}, str(exc).encode(), time.monotonic() - started)
    return Answer(name, resp.status_code, resp.headers, resp.content, time.monotonic() - started)


class Engine:
    """The engine's calls, each once, as its HTTP client sends them (JSON body, Basic auth)."""

    def __init__(self, service, token, blob_url=None):
        self.base = service.url + "/magicache/"
        self.service = service
        self.auth = {"Authorization": basic(token), "Content-Type": "application/json"}
        self.blob_url = blob_url

    def calls(self):
        digest = "sha256:" + hashlib.sha256(os.urandom(8)).hexdigest()
        engine = {"EngineID": "fault-probe"}
        wanted = [
            ("config", "GET", "config", engine),
            ("records", "POST", "records", {"CacheKeys": [], "Links": []}),
            ("import", "GET", "import", None),
            ("layerUploadURL", "GET", "layerUploadURL", {"Digest": digest}),
            ("layers", "POST", "layers", {"UpdatedRecords": []}),
            ("cacheMountUploadURL", "GET", "cacheMountUploadURL",
             {"CacheName": "go-mod", "Digest": digest, "Size": 10}),
        ]
        for name, method, path, body in wanted:
            yield name, method, self.base + path, {"headers": self.auth, "data": json.dumps(body or {})}
        if self.blob_url and self.blob_url.startswith(self.service.url):
            yield "blob GET", "GET", self.blob_url, {"headers": {"Range": "bytes=0-"}}

    def round(self):
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda c: call(c[0], c[1], c[2], **c[3]), self.calls()))

    def healthz(self):
        return call("healthz", "GET", self.service.url + "/healthz")


def assert_clean(answers):
    """Every answer a 200, or a JSON 503 with Retry-After; fast; no HTML on a blob URL."""
    for a in answers:
        assert a.seconds < LIMIT, f"{a!r} took too long"
        assert a.status in RETRYABLE or (a.name == "blob GET" and a.status == 206), a
        if a.status == 503:
            assert a.headers.get("Content-Type", "").startswith("application/json"), a
            assert int(a.headers["Retry-After"]) > 0, a
            assert "error" in json.loads(a.body), a


def felt(answers, part):
    """The answers that say `part` is unavailable."""
    return [a for a in answers if a.status == 503 and json.loads(a.body).get("unavailable") == part]


def recovered(engine):
    """Await the service answering every call with 200 (polls; returns the last round)."""
    deadline = time.monotonic() + RECOVERY
    while True:
        answers = engine.round() + [engine.healthz()]
        if all(a.status in (200, 206) for a in answers):
            return answers
        assert time.monotonic() < deadline, f"not recovered after {RECOVERY}s: {answers}"
        time.sleep(0.3)


# ---- what must hold afterwards ----------------------------------------------------------


def engines_run_clean(service, token, seed, mounts=True):
    report = run(RunOptions(url=service.url + "/magicache", token=token, engines=2, scale=4096,
                            seed=seed, settle_seconds=20, mounts=mounts))
    summary = "\n".join(report.lines()) + f"\n--- gunicorn ---\n{service.output()[-3000:]}"
    assert report.violations == [] and report.wrong_hits == [], summary
    assert report.hits > 0 and report.misses == 0, summary


def import_holds_every_result(service, token, org):
    """Every Result the service accepted is in /import (its record, its top layer), and
    every layer /import names downloads with the bytes of its digest. Awaits a rebuild."""
    from records.models import Result

    auth = {"Authorization": basic(token), "Content-Type": "application/json", "Accept-Encoding": "gzip"}
    delivered = set(Result.objects.filter(record__organization=org).values_list("record__digest", "top_digest"))
    assert delivered
    deadline = time.monotonic() + RECOVERY
    while True:
        resp = requests.get(service.url + "/magicache/import", headers=auth, data="{}", timeout=30)
        assert resp.status_code == 200, resp.content[:300]
        body = json.loads(resp.content)
        layers = body.get("layers") or []
        # A record's result is its "layers" entry: the top of its chain.
        with_result = {rec["digest"] for rec in body.get("records") or [] if rec.get("layers")}
        blobs = {layer["blob"] for layer in layers}
        missing = {d for d in delivered if d[0] not in with_result or d[1] not in blobs}
        if not missing:
            break
        assert time.monotonic() < deadline, f"{len(missing)} of {len(delivered)} results not in /import"
        time.sleep(0.3)
    for layer in layers:
        url = requests.get(service.url + "/magicache/layerDownloadURL", headers=auth,
                           data=json.dumps({"Digest": layer["blob"]}), timeout=30).json()["URL"]
        blob = requests.get(url, timeout=30)
        assert blob.status_code == 200, (layer["blob"], blob.status_code, blob.content[:200])
        data = gzip.decompress(blob.content) if blob.headers.get("Content-Encoding") == "gzip" else blob.content
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["blob"]


def assert_log_clean(service, token):
    """No 500 in the access log, and no token or URL signature in full anywhere."""
    output = service.output()
    assert '" 500 ' not in output
    assert token not in output
    assert not re.search(r"sig=[A-Za-z0-9_-]{12}", output)


def a_blob_url(service, token, org):
    from records.models import Layer

    digest = Layer.objects.filter(organization=org).values_list("digest", flat=True).first()
    resp = requests.get(service.url + "/magicache/layerDownloadURL", data=json.dumps({"Digest": digest}),
                        headers={"Authorization": basic(token), "Content-Type": "application/json"}, timeout=30)
    return resp.json()["URL"]


def fault_cycle(engine, proxy, fault, part, expect_felt=True):
    """Apply `fault`, check the answers engines get meanwhile, restore, await recovery."""
    fault()
    try:
        answers = engine.round() + [engine.healthz()]
        assert_clean(answers[:-1])
        health = answers[-1]
        assert health.status == 503 and health.seconds < LIMIT, health
        # Which part fails (what it said is for superusers and the metrics token).
        assert json.loads(health.body)[part] == {"ok": False}, health
        if expect_felt:
            assert felt(answers[:-1], part), answers
        # Stays clean while the fault lasts: a second round on whatever the first left.
        assert_clean(engine.round())
    finally:
        proxy.restore()
    recovered(engine)


def short_pause(engine, proxy, seconds=1.0):
    """The dependency stops answering for a moment: the calls meanwhile wait for it and
    then answer as usual."""
    proxy.pause()
    paused = threading.Timer(seconds, proxy.restore)
    paused.start()
    try:
        answers = engine.round()
    finally:
        paused.join()
    assert_clean(answers)
    return answers


# ---- PostgreSQL -------------------------------------------------------------------------


@postgres_only()
def test_postgresql_cut_paused_and_black_holed(org, token):
    conf = connection.settings_dict
    proxy = FaultProxy(conf.get("HOST") or "127.0.0.1", conf.get("PORT") or 5432)
    direct = database_url_for_children()
    parts = urlsplit(direct)
    through = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{proxy.port}"
                                        if "@" in parts.netloc else f"127.0.0.1:{proxy.port}"))
    worker = CeleryWorker()
    service = LiveService(DATABASE_URL=through, **FAST)
    try:
        engines_run_clean(service, token, seed=1)
        engine = Engine(service, token, a_blob_url(service, token, org))
        recovered(engine)  # pooled connections open through the proxy
        fault_cycle(engine, proxy, proxy.cut, "database")
        fault_cycle(engine, proxy, proxy.black_hole, "database")
        short_pause(engine, proxy)
        engines_run_clean(service, token, seed=2)
        import_holds_every_result(service, token, org)
        assert_log_clean(service, token)
    finally:
        service.stop()
        worker.stop()
        proxy.stop()


# ---- Redis ------------------------------------------------------------------------------


@pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("redis://"),
                    reason="needs Redis: CI's scaled-out pass runs it")
def test_redis_cut_black_holed_and_paused_costs_no_answer(org, token):
    broker = urlsplit(settings.CELERY_BROKER_URL)
    proxy = FaultProxy(broker.hostname, broker.port or 6379)
    through = urlunsplit(broker._replace(netloc=f"{broker.hostname}:{proxy.port}"))
    worker = CeleryWorker()
    service = LiveService(CELERY_BROKER_URL=through, **FAST)
    try:
        engines_run_clean(service, token, seed=3)
        engine = Engine(service, token, a_blob_url(service, token, org))
        # Work that can wait for the broker does not fail the engine's call: every call
        # answers 200 (nothing is a 503 for a task that was not queued).
        for fault in (proxy.cut, proxy.black_hole):
            fault()
            try:
                answers = engine.round()
                health = engine.healthz()
            finally:
                proxy.restore()
            for a in answers:
                assert a.status in (200, 206) and a.seconds < LIMIT, a
            assert health.status == 503 and health.seconds < LIMIT, health
            recovered(engine)
        for a in short_pause(engine, proxy):
            assert a.status in (200, 206), a
        engines_run_clean(service, token, seed=4)
        import_holds_every_result(service, token, org)
        assert_log_clean(service, token)
    finally:
        service.stop()
        worker.stop()
        proxy.stop()


# ---- the S3 store -----------------------------------------------------------------------


@pytest.mark.once
def test_s3_store_cut_black_holed_and_paused(org, token, seaweedfs):  # noqa: F811
    endpoint = urlsplit(seaweedfs.endpoint_url)
    proxy = FaultProxy(endpoint.hostname, endpoint.port)
    prefix = "faults" + os.urandom(4).hex()
    # No worker: without mounts nothing here waits for one (/import builds on demand).
    service = LiveService(**{**seaweedfs.env(prefix), "CACHEWEB_S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"},
                          **FAST)
    try:
        engines_run_clean(service, token, seed=5, mounts=False)
        engine = Engine(service, token)
        for fault in (proxy.cut, proxy.black_hole):
            # Presigning needs no store: most calls answer 200; /healthz says storage.
            fault_cycle(engine, proxy, fault, "storage", expect_felt=False)
        short_pause(engine, proxy)
        # S3 mount uploads are confirmed by the worker's periodic check: slow, and not
        # what this is about.
        engines_run_clean(service, token, seed=6, mounts=False)
        import_holds_every_result(service, token, org)
        assert_log_clean(service, token)
    finally:
        service.stop()
        proxy.stop()


# ---- embedded ---------------------------------------------------------------------------


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite only (CI's embedded pass)")
def test_sqlite_locked_by_another_writer_is_a_503_then_recovers(org, token):
    service = LiveService(**FAST)
    engine = Engine(service, token)
    try:
        recovered(engine)
        holder = sqlite3.connect(connection.settings_dict["NAME"], timeout=1, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, as a long worker transaction holds it
        try:
            answers = engine.round()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert_clean(answers)
        assert felt(answers, "database"), answers
        recovered(engine)
    finally:
        service.stop()


@pytest.mark.once
def test_filesystem_broker_directory_unusable_costs_no_answer(org, token, tmp_path):
    """The embedded broker's queue directory gone bad (here: replaced by a file, since the
    tests run as root and permissions would not stop them): mount uploads and exports
    still answer 200, /healthz says the broker fails."""
    data = tmp_path / "data"
    service = LiveService(CACHEWEB_DATA_DIR=data, CELERY_BROKER_URL="", CACHEWEB_S3_BUCKET="", **FAST)
    engine = Engine(service, token)
    queue = data / "broker" / "queue"
    try:
        recovered(engine)
        queue.rename(data / "broker" / "queue.moved")
        queue.write_text("not a directory")
        try:
            answers = engine.round()
            health = engine.healthz()
            # A whole engine run, mounts included, while no task can be queued.
            engines_run_clean(service, token, seed=7)
        finally:
            queue.unlink()
            (data / "broker" / "queue.moved").rename(queue)
        for a in answers:
            assert a.status in (200, 206) and a.seconds < LIMIT, a
        assert health.status == 503, health
        recovered(engine)
        import_holds_every_result(service, token, org)
        assert_log_clean(service, token)
    finally:
        service.stop()
