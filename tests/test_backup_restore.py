"""README, "Backups and upgrades": a blob store restored from a backup older than the
database is healed by `verifyblobs` and the engines' next exports, with no wrong hit and
no layer an engine cannot download on the way."""

import shutil
import subprocess
import sys

import pytest
from django.conf import settings

from blobs.models import Blob, BlobState
from blobs.storage import get_store
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
        worker.stop(grace=20)
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
        worker.stop(grace=20)
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
