"""README, "Backups and upgrades": an upgrade from the previous release's schema keeps
the cache. The database is migrated back to the migrations that release shipped (commit
b269155: each app's leaf below), filled with the rows its engine endpoints left (a token
issued the way it issued them, an engine, a two-record build with a two-layer chain and
verified blobs, a cache mount snapshot), then migrated to the latest. The rows are all
there, the old token still works, /import serves the old build as a hit, and /records
takes new exports."""

import hashlib
import secrets
from pathlib import Path

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from accounts.models import EngineToken
from blobs.storage import get_store
from records import bulk
from records.models import Record, Result
from tests.buildkit_oracle import (
    ImportedCache,
    Query,
    get_import,
    key,
    link,
    output_key,
    random_key_id,
    result,
    root_key,
    sha,
)
from tests.test_import import export

# The leaf migration of every app at the previous release (b269155); `api` did not exist.
PREVIOUS_RELEASE = [
    ("accounts", "0003_alter_organization_export_period_and_more"),
    ("blobs", "0001_initial"),
    ("records", "0003_import_build_claim"),
    ("mounts", "0003_snapshot_digest_index"),
    ("api", None),
]
MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
IMAGE_DIGEST, EXEC_DIGEST = sha("docker-image://debian"), sha("exec make all")
IMAGE, EXEC = root_key(IMAGE_DIGEST), output_key(EXEC_DIGEST)
SELECTOR = sha("selector")


def old_token(EngineTokenModel, org):
    """A token as the previous release's EngineToken.issue made it."""
    value = "cwt_" + secrets.token_urlsafe(32).replace("-", "x").replace("_", "y")
    EngineTokenModel.objects.create(organization=org, label="from the old release", lookup=value[4:12],
                                    token_hash=hashlib.sha256(value.encode()).hexdigest())
    return value


def old_blob(Blob, org, name, now):
    data = name.encode() * 10
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    Blob.objects.create(organization=org, digest=digest, size=len(data), state="verified", verified_at=now,
                        last_used_at=now)
    store = get_store()
    if store.kind == "filesystem":  # as tests.buildkit_oracle.store_blob does
        path = Path(store.path(org.pk, digest))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return digest, len(data)


@pytest.mark.django_db(transaction=True)
def test_upgrade_from_the_previous_release_keeps_the_cache(client):
    executor = MigrationExecutor(connection)
    executor.migrate(PREVIOUS_RELEASE)
    old = executor.loader.project_state([t for t in PREVIOUS_RELEASE if t[1]]).apps
    get = old.get_model
    Organization, Engine = get("accounts", "Organization"), get("accounts", "Engine")
    Record_, RecordInput, Layer = get("records", "Record"), get("records", "RecordInput"), get("records", "Layer")
    Result_, ResultLayer, Blob = get("records", "Result"), get("records", "ResultLayer"), get("blobs", "Blob")
    CacheMount, MountSnapshot = get("mounts", "CacheMount"), get("mounts", "MountSnapshot")
    now = timezone.now()

    org = Organization.objects.create(slug="legacy", name="legacy")
    value = old_token(get("accounts", "EngineToken"), org)
    engine = Engine.objects.create(organization=org, engine_id="engine-from-the-old-release")
    (base, base_size), (top, top_size) = old_blob(Blob, org, "base", now), old_blob(Blob, org, "top", now)
    layers = [Layer.objects.create(organization=org, digest=d, media_type=MEDIA_TYPE, size=s, diff_id=sha("diff " + d))
              for d, s in ((base, base_size), (top, top_size))]
    image = Record_.objects.create(organization=org, identity=sha("identity image"), digest=IMAGE, has_result=True)
    make = Record_.objects.create(organization=org, identity=sha("identity make"), digest=EXEC, input_count=1,
                                  has_result=True)
    RecordInput.objects.create(organization=org, record=make, index=0, selector=SELECTOR, source=image)
    for record, chain in ((image, layers[:1]), (make, layers)):
        row = Result_.objects.create(record=record, chain=sha("chain " + record.digest), complete=True,
                                     cache_ref_id="ref-" + record.digest[7:15], created_at=now, engine=engine)
        for position, layer in enumerate(chain):
            ResultLayer.objects.create(result=row, position=position, layer=layer)
    mount = CacheMount.objects.create(organization=org, name="go-build")
    MountSnapshot.objects.create(mount=mount, digest=sha("snapshot"), size=123, state="verified", verified_at=now)

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    # Every row is there, read through today's models, and the new columns were filled.
    assert Record.objects.filter(organization_id=org.pk).count() == 2
    # Identities became their 32 bytes (records 0006) and read back as the same text,
    # through the ORM and through the bulk lookup of /records.
    identities = {sha("identity image"): image.pk, sha("identity make"): make.pk}
    assert dict(Record.objects.filter(organization_id=org.pk).values_list("identity", "pk")) == identities
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT identity FROM {Record._meta.db_table} WHERE id = %s", [image.pk])
        assert bytes(cursor.fetchone()[0]) == bytes.fromhex(sha("identity image")[7:])
    assert bulk.records_by_identity(org.pk, [*identities, sha("not stored")]) == {
        identity: (pk, True) for identity, pk in identities.items()
    }
    assert Record.objects.get(identity__startswith=sha("identity make")[:12], organization_id=org.pk).pk == make.pk
    made = Result.objects.get(record__digest=EXEC, record__organization_id=org.pk)
    assert (made.layer_count, made.top_digest, made.size, made.chain_size) == (2, top, top_size, base_size + top_size)
    assert made.engine_id == engine.pk
    from mounts.models import MountSnapshot as Snapshot
    assert Snapshot.objects.get(mount__organization_id=org.pk).digest == sha("snapshot")
    assert EngineToken.objects.filter(organization_id=org.pk).count() == 1

    # The old token still authenticates, and the old build comes back as a hit.
    config = get_import(client, value)
    assert {r["digest"] for r in config["records"]} == {IMAGE, EXEC}
    cache = ImportedCache(config)
    assert cache.lookup(Query(EXEC_DIGEST, 0, ((Query(IMAGE_DIGEST), SELECTOR),))) == {(base, top)}
    assert cache.lookup(Query(EXEC_DIGEST, 0, ((Query(IMAGE_DIGEST), ""),))) == set()

    # New exports go in beside it and show in the next import.
    from accounts.models import Organization as Org
    k = random_key_id()
    new_image = root_key(sha("docker-image://alpine"))
    asked = export(client, Org.objects.get(pk=org.pk), value, [key(new_image, result("img")), key(k, result("run"))],
                   [link(k, new_image, 0, sha("exec run"))], {"img": ["alpine"], "run": ["alpine", "run"]})
    assert {entry["CacheRefID"] for entry in asked} == {"img", "run"}
    digests = {r["digest"] for r in get_import(client, value)["records"]}
    assert digests == {IMAGE, EXEC, new_image, sha("exec run")}
