"""Scale-out with the built-in storage: the blob directory carries an identity recorded in
the database; a process on another directory refuses to start and never marks the blobs
it cannot see lost (blobs/identity.py, README "Scaling out")."""

import io

import pytest
import requests
from django.conf import settings
from django.core.management import CommandError, call_command

from blobs import services
from blobs.identity import IDENTITY_FILE, WrongBlobDirectory, check_store, read_identity
from blobs.models import Blob, BlobState, StoreIdentity
from blobs.storage import StoreUnavailable, get_store
from tests.cache_rows import a_blob, a_layer
from tests.support import LiveService, basic

pytestmark = pytest.mark.skipif(bool(settings.S3_BUCKET), reason="the built-in blob directory")


def use_directory(settings, path):
    path.mkdir(parents=True, exist_ok=True)
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": path}},
    }
    return get_store()


def state(org, digest):
    return Blob.objects.get(organization=org, digest=digest).state


@pytest.mark.django_db
def test_first_use_gives_the_directory_and_the_database_one_identity(builtin):
    store_id = check_store()
    assert read_identity(get_store()) == store_id == StoreIdentity.objects.get(pk=1).store_id
    assert (get_store().root / IDENTITY_FILE).is_file()
    assert check_store() == store_id


@pytest.mark.django_db
def test_another_directory_is_refused_saying_what_to_do(settings, tmp_path):
    first = use_directory(settings, tmp_path / "first")
    store_id = check_store()
    use_directory(settings, tmp_path / "second")
    with pytest.raises(WrongBlobDirectory) as refused:
        check_store()
    message = str(refused.value)
    assert str(tmp_path / "second") in message and store_id in message
    assert "shared filesystem" in message and "blobstore --adopt" in message
    # Nor with an identity of its own.
    (tmp_path / "second" / IDENTITY_FILE).write_text("another\n")
    with pytest.raises(WrongBlobDirectory, match="holds store id another"):
        check_store()
    # The first still is the store; adopting the second on purpose makes it the store.
    use_directory(settings, first.root)
    assert check_store() == store_id
    use_directory(settings, tmp_path / "second")
    assert check_store(adopt=True) == store_id
    assert check_store() == store_id


@pytest.mark.django_db
def test_a_database_from_before_adopts_only_a_directory_holding_its_blobs(settings, tmp_path, org):
    use_directory(settings, tmp_path / "old")
    a_blob(org, "written before the identity", 100)
    use_directory(settings, tmp_path / "empty")
    with pytest.raises(WrongBlobDirectory, match="none of its 1 newest"):
        check_store()
    assert not StoreIdentity.objects.exists()
    use_directory(settings, tmp_path / "old")
    assert check_store() == StoreIdentity.objects.get().store_id


@pytest.mark.django_db
def test_blobs_missing_from_a_foreign_directory_are_not_marked_lost(settings, tmp_path, org):
    home = use_directory(settings, tmp_path / "home")
    check_store()
    digest = a_blob(org, "layer", 300)
    a_layer(org, digest, 300)
    use_directory(settings, tmp_path / "elsewhere")
    # Not offered from here, but left verified.
    assert services.verified_blob_sizes(org, [digest]) == {}
    with pytest.raises(services.BlobNotFound):
        services.download_url(None, org, digest)
    with pytest.raises(StoreUnavailable):
        services.rehash_blobs(org)
    assert state(org, digest) == BlobState.VERIFIED
    # On the store itself a missing file is lost, as before.
    use_directory(settings, home.root)
    assert services.verified_blob_sizes(org, [digest]) == {digest: 300}
    home.path(org.pk, digest).unlink()
    assert services.verified_blob_sizes(org, [digest]) == {}
    assert state(org, digest) == BlobState.PENDING


@pytest.mark.django_db
def test_blobstore_command_reports_and_adopts(settings, tmp_path):
    use_directory(settings, tmp_path / "first")
    out = io.StringIO()
    call_command("blobstore", stdout=out)
    assert "is this database's blob store" in out.getvalue()
    use_directory(settings, tmp_path / "second")
    with pytest.raises(CommandError, match="has no cacheweb-store-id file"):
        call_command("blobstore", stdout=out)
    call_command("blobstore", "--adopt", stdout=out)
    assert read_identity(get_store()) == StoreIdentity.objects.get().store_id


def download(service, token, digest):
    return requests.get(f"{service.url}/magicache/layerDownloadURL", json={"Digest": digest},
                        headers={"Authorization": basic(token)}, timeout=10)


@pytest.mark.django_db(transaction=True)
def test_a_second_web_process_on_its_own_data_dir_refuses_and_no_blob_is_lost(tmp_path, org, token):
    first = LiveService()
    try:
        digest = a_blob(org, "exported through the first", 300)
        a_layer(org, digest, 300)
        assert download(first, token, digest).status_code == 200
        with pytest.raises(RuntimeError) as refused:
            LiveService(CACHEWEB_DATA_DIR=tmp_path / "second")
        output = str(refused.value)
        assert "cacheweb refuses to start" in output and str(tmp_path / "second" / "blobs") in output
        assert "shared filesystem" in output, output
        assert state(org, digest) == BlobState.VERIFIED
        assert download(first, token, digest).status_code == 200
        assert state(org, digest) == BlobState.VERIFIED
    finally:
        first.stop()
