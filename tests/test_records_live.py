"""A real-size /records body through gunicorn: chunked, far above Django's 2.5 MB default."""

import orjson
import pytest
import requests

from records.models import Record
from tests.support import LiveService
from tests.buildkit_oracle import key, link, output_key, random_key_id, result, root_key, sha


@pytest.fixture
def live_service(module_live_service, transactional_db):
    """The module's one server (tests/conftest.py): these tests only read its answers."""
    return module_live_service


def post_records_chunked(service, token, body):
    """POST /records with the body sent chunked, as the engine's Go client sends it."""
    return requests.post(
        service.url + "/magicache/records",
        data=(body[i : i + 65536] for i in range(0, len(body), 65536)),
        headers={"Content-Type": "application/json"},
        auth=(token, ""),
        timeout=120,
    )


def test_large_chunked_export_through_gunicorn(live_service, org, token):
    image = root_key(sha("image"))
    ids = [random_key_id() for _ in range(20_000)]
    keys = [key(image)] + [key(k, result(f"ref-{k}", description="exec " + "x" * 80)) for k in ids]
    links = [link(k, image, 0, output_key(sha(f"op {n}"))) for n, k in enumerate(ids)]
    body = orjson.dumps({"CacheKeys": keys, "Links": links}) + b"\n"
    assert len(body) > 5 * 1024 * 1024
    response = post_records_chunked(live_service, token, body)
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["ExportRecords"]) == 500  # CACHEWEB_EXPORT_RECORDS_MAX
    assert Record.objects.filter(organization=org).count() == 20_001


def test_oversize_body_is_413_through_gunicorn(transactional_db, token):
    live = LiveService(CACHEWEB_MAX_ENGINE_BODY=200_000)
    try:
        response = requests.post(
            live.url + "/magicache/records",
            data=(b" " * 65536 for _ in range(8)),
            headers={"Content-Type": "application/json"},
            auth=(token, ""),
            timeout=60,
        )
    finally:
        live.stop()
    assert response.status_code == 413
    assert "error" in response.json()
    assert not Record.objects.exists()


def test_read_only_export_leaves_the_connection_usable(live_service, org, ro_token):
    """A read-only token's body is not parsed, but the next request on the same
    keep-alive connection must still be read correctly."""
    session = requests.Session()
    session.auth = (ro_token, "")
    body = orjson.dumps({"CacheKeys": [key(root_key(sha(f"k{n}"))) for n in range(3000)], "Links": None})
    for _ in range(2):
        response = session.post(live_service.url + "/magicache/records", data=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 200
        assert response.json() == {"ExportRecords": []}
        response = session.get(live_service.url + "/magicache/import")
        assert response.status_code == 200
        assert response.json() == {"layers": [], "records": []}
    assert not Record.objects.exists()


def test_engines_posting_the_same_new_graph_at_once(live_service, org, token):
    """A CI fleet starting together: every engine gets its answer, one set of records."""
    import threading

    import random

    roots = [root_key(sha(f"fleet image {n}")) for n in range(1000)]

    def payload(seed):
        # Many independent branches, listed in another order by each engine, so that
        # each would meet the same new records in its own order.
        ids = [random_key_id() for _ in roots]
        keys = [key(r) for r in roots] + [key(k, result(f"ref-{k}")) for k in ids]
        links = [link(k, r, 0, output_key(sha("step"))) for k, r in zip(ids, roots)]
        rng = random.Random(seed)
        rng.shuffle(keys)
        rng.shuffle(links)
        return orjson.dumps({"CacheKeys": keys, "Links": links})

    bodies = [payload(seed) for seed in range(4)]
    statuses = []

    def post(body):
        response = post_records_chunked(live_service, token, body)
        statuses.append((response.status_code, response.text[:300]))

    threads = [threading.Thread(target=post, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _ in statuses] == [200] * 4, statuses
    assert Record.objects.filter(organization=org).count() == 2000
