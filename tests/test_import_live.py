"""The export/import cycle as production runs it: gunicorn, chunked bodies, a Celery worker
that rebuilds the import once a change is committed."""

import time

import orjson
import requests

from records.models import ImportSnapshot
from tests.buildkit_oracle import ImportedCache, Query, descriptor, key, link, output_key, random_key_id, result, root_key, sha, store_blob

IMAGE_DIGEST = sha("docker-image://node:22")
EXEC_DIGEST = sha("exec npm ci")


def chunked(payload):
    body = orjson.dumps(payload) + b"\n"
    # A generator makes requests send the body chunked, as the engine's io.Pipe does.
    return (body[i : i + 50] for i in range(0, len(body), 50))


def test_export_then_worker_builds_the_import(live_service, celery_worker_process, org, token):
    session = requests.Session()
    session.auth = (token, "")
    base = live_service.url + "/magicache"
    k = random_key_id()
    keys = [key(root_key(IMAGE_DIGEST), result("img")), key(k, result("npm", description="exec npm ci"))]
    links = [link(k, root_key(IMAGE_DIGEST), 0, output_key(EXEC_DIGEST))]
    response = session.post(base + "/records", data=chunked({"CacheKeys": keys, "Links": links}), headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    asked = response.json()["ExportRecords"]
    assert {e["CacheRefID"] for e in asked} == {"img", "npm"}

    updated = []
    for entry in asked:
        names = [sha("node base"), sha("layer " + entry["CacheRefID"])]
        for name in names:
            store_blob(org, name, 42)
        updated.append({"RecordDigest": entry["Digest"], "Layers": [descriptor(n, 42) for n in names]})
    response = session.post(base + "/layers", data=chunked({"UpdatedRecords": updated}), headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert len(response.json()["Accepted"]) == 2

    # No GET yet: the worker builds the import from the task queued on commit.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        snapshot = ImportSnapshot.objects.filter(organization=org).first()
        if snapshot is not None and snapshot.current:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"the worker did not build the import:\n{celery_worker_process.output()[-3000:]}")
    assert snapshot.record_count == 2

    response = session.get(base + "/import")  # requests asks for gzip and decodes it
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["ETag"] == snapshot.etag
    cache = ImportedCache(response.json())
    found = cache.lookup(Query(EXEC_DIGEST, 0, ((Query(IMAGE_DIGEST), ""),)))
    assert found == {(sha("node base"), sha("layer npm"))}
