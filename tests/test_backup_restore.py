"""README, "Backups and upgrades": a blob store restored from a backup older than the
database is healed by `verifyblobs` and the engines' next exports, with no wrong hit and
no layer an engine cannot download on the way. The other direction, a database older
than the blob store, gives no wrong hit either: blob files the database does not know
are not trusted, and the engines' next exports upload and verify them again."""

import shutil
import subprocess
import sys

import pytest
from django.conf import settings

from blobs.models import Blob, BlobState
from blobs.storage import get_store
from enginesim import layers as layerlib
from enginesim.scenarios import RunOptions, run
from records.models import Result
from tests.support import ROOT, CeleryWorker, LiveService, child_env

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(bool(settings.S3_BUCKET), reason="restores the built-in blob directory"),
]


def simulate(url, token, seed):
    report = run(RunOptions(url=url + "/magicache", token=token, engines=2, scale=4096, seed=seed,
                            settle_seconds=30))
    assert report.violations == [] and report.wrong_hits == [], "\n".join(report.lines())
    return report


def test_blobs_missing_after_a_restore_are_healed(tmp_path, token, org):
    store = get_store()
    assert store.kind == "filesystem"
    blob_dir = store.root / str(org.pk)
    service, worker = LiveService(), CeleryWorker()
    try:
        simulate(service.url, token, seed=1)
        # The nightly copy of the blob store...
        shutil.copytree(blob_dir, tmp_path / "blobs-backup")
        # ...then a day of further exports, recorded in the database.
        later = simulate(service.url, token, seed=2)
        assert later.layers_uploaded > 0
    finally:
        worker.stop()
        service.stop()

    # The disk is lost: the database comes back whole, the blobs from the older copy.
    before = set(Blob.objects.filter(organization=org, state=BlobState.VERIFIED).values_list("digest", flat=True))
    shutil.rmtree(blob_dir)
    shutil.copytree(tmp_path / "blobs-backup", blob_dir)
    store = get_store()
    missing = {digest for digest in before if not store.path(org.pk, digest).exists()}
    present = before - missing
    assert missing and present

    done = subprocess.run([sys.executable, "manage.py", "verifyblobs"], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{org.slug}: {len(before)} blob(s) checked, {len(missing)} bad" in done.stdout
    states = dict(Blob.objects.filter(organization=org).values_list("digest", "state"))
    assert {states[d] for d in missing} == {BlobState.PENDING}
    assert {states[d] for d in present} == {BlobState.VERIFIED}
    # Results whose chain lost a blob leave the import until an engine delivers them again.
    incomplete = Result.objects.filter(record__organization=org, complete=False)
    assert incomplete.exists()
    assert not Result.objects.filter(record__organization=org, complete=True, layers__digest__in=missing).exists()

    service, worker = LiveService(), CeleryWorker()
    try:
        # The same builds again: the service asks for the records it lost, the engines
        # upload their layers again, and the second engine of each pair hits everything.
        healed = simulate(service.url, token, seed=2)
    finally:
        worker.stop()
        service.stop()
    assert healed.exported_records > 0 and healed.layers_uploaded > 0, "\n".join(healed.lines())
    assert healed.hits > 0 and healed.misses == 0, "\n".join(healed.lines())
    assert healed.layers_downloaded > 0
    states = dict(Blob.objects.filter(organization=org).values_list("digest", "state"))
    uploaded_again = {d for d in missing if states[d] == BlobState.VERIFIED}
    assert uploaded_again and all(store.path(org.pk, d).exists() for d in uploaded_again)
    # Whatever was not uploaded again (a result no engine was asked for again) stays
    # pending, out of every import, for garbage collection or a later export.
    still = missing - uploaded_again
    assert {states[d] for d in still} <= {BlobState.PENDING}
    assert not Result.objects.filter(record__organization=org, complete=True, layers__digest__in=still).exists()


def test_an_older_database_over_a_newer_blob_store_gives_no_wrong_hit_and_heals(tmp_path, token, org):
    """The other direction: the database comes back from a copy older than the blob store.
    Blob files the database does not know are there, results it lacks are gone. Such a
    file is never trusted: it is only kept once an engine uploads that blob again and the
    upload is verified. To show it, every such file is damaged (same size) before the
    engines come back: a service that trusted them would hand out the damaged bytes."""
    from django.core.management import call_command

    store = get_store()
    assert store.kind == "filesystem"
    backup = tmp_path / "db-backup.json"
    apps = ["accounts", "blobs", "records", "mounts"]
    service, worker = LiveService(), CeleryWorker()
    try:
        simulate(service.url, token, seed=1)
        worker.stop()
        service.stop()
        # The nightly database copy...
        call_command("dumpdata", *apps, output=str(backup), verbosity=0)
        known = set(Blob.objects.filter(organization=org).values_list("digest", flat=True))
        results = Result.objects.filter(record__organization=org).count()
        service, worker = LiveService(), CeleryWorker()
        # ...then a day of further exports, whose blobs reach the store.
        later = simulate(service.url, token, seed=2)
        assert later.layers_uploaded > 0
    finally:
        worker.stop()
        service.stop()
    newer = set(Blob.objects.filter(organization=org, state=BlobState.VERIFIED).values_list("digest", flat=True))
    unknown = newer - known
    assert unknown and all(store.path(org.pk, d).exists() for d in unknown)

    # The database is lost and comes back from the older copy; the blob store is newer.
    call_command("flush", interactive=False, verbosity=0)
    call_command("loaddata", str(backup), verbosity=0)
    assert set(Blob.objects.filter(organization=org).values_list("digest", flat=True)) == known
    assert Result.objects.filter(record__organization=org).count() == results
    for digest in unknown:
        path = store.path(org.pk, digest)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    service, worker = LiveService(), CeleryWorker()
    try:
        # The newer builds again: the service knows nothing of them, so the first engine
        # of each pair exports them, uploading every layer the database lacks, and the
        # second hits that work, downloading (and checking) the layers.
        healed = simulate(service.url, token, seed=2)
        again = simulate(service.url, token, seed=2)
    finally:
        worker.stop()
        service.stop()
    lines = "\n".join(healed.lines())
    assert healed.exported_records > 0 and healed.layers_uploaded > 0, lines
    assert healed.hits > 0 and healed.misses == 0 and healed.layers_downloaded > 0, lines
    assert healed.violations == [] and healed.wrong_hits == [], lines
    # Every blob that is verified again was uploaded and checked: its file holds its bytes.
    states = dict(Blob.objects.filter(organization=org).values_list("digest", "state"))
    verified_again = {d for d in unknown if states.get(d) == BlobState.VERIFIED}
    assert verified_again, lines
    for digest in verified_again:
        assert layerlib.sha256_digest(store.path(org.pk, digest).read_bytes()) == digest
    # Healed: the same builds once more find the service knowing those layers; what is
    # uploaded is each run's own new work, less than the healing run put back.
    assert again.hits > 0 and again.misses == 0, "\n".join(again.lines())
    assert again.layers_uploaded < healed.layers_uploaded, lines + "\n" + "\n".join(again.lines())
