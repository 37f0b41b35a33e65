import pytest

from accounts.models import EngineToken, Organization
from tests.support import CeleryWorker, LiveService


@pytest.fixture
def org(db):
    return Organization.ensure("acme")


@pytest.fixture
def other_org(db):
    return Organization.ensure("globex")


@pytest.fixture
def token(org):
    """A read-write engine token's value for `org`."""
    return EngineToken.issue(org, label="rw")[1]


@pytest.fixture
def ro_token(org):
    return EngineToken.issue(org, read_only=True, label="ro")[1]


@pytest.fixture
def other_token(other_org):
    return EngineToken.issue(other_org, label="other")[1]


@pytest.fixture
def live_service(transactional_db):
    """The service as production runs it (gunicorn + the real WSGI stack) on the test DB."""
    service = LiveService()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def module_live_service(django_db_setup):
    """One gunicorn for a whole module, on the test DB, for modules whose tests only send
    requests and read the answers (not the server's log, no settings of their own): a
    start and stop cost 1.5-3 s. Each test's transactional_db still empties the tables
    after it; the server's per-process caches are keyed by primary keys, which a flush
    does not reuse. Such a module overrides live_service with it:

        @pytest.fixture
        def live_service(module_live_service, transactional_db):
            return module_live_service
    """
    service = LiveService()
    yield service
    service.stop()


@pytest.fixture
def celery_worker_process(transactional_db):
    """A real Celery worker consuming the configured broker, on the test DB."""
    worker = CeleryWorker()
    yield worker
    worker.stop()


@pytest.fixture
def operators(org, django_user_model):
    """A maintainer and a viewer of `org`, and an outsider who belongs to another org."""
    from accounts.models import Membership, Organization, Role

    maintainer = django_user_model.objects.create_user("maya", password="pw-maya-123")
    viewer = django_user_model.objects.create_user("victor", password="pw-victor-123")
    outsider = django_user_model.objects.create_user("olga", password="pw-olga-123")
    Membership.objects.create(organization=org, user=maintainer, role=Role.MAINTAINER)
    Membership.objects.create(organization=org, user=viewer, role=Role.VIEWER)
    Membership.objects.create(organization=Organization.ensure("elsewhere"), user=outsider, role=Role.MAINTAINER)
    return {"maintainer": maintainer, "viewer": viewer, "outsider": outsider}


@pytest.fixture(autouse=True, scope="session")
def _forget_buffered_blob_uses():
    """Blob use counts are buffered per process and flushed at exit; in the test process
    the test database is gone by then, so drop what the last tests left."""
    yield
    from blobs import services

    services._uses.clear()


@pytest.fixture(autouse=True)
def _forget_engine_guesses():
    """Engine guesses are cached per process (activity.attribution); a test's rows are
    rolled back, and the next test's token may have the same primary key."""
    from activity import attribution

    attribution.forget_all()
    yield


@pytest.fixture(autouse=True)
def _forget_record_rows():
    """Record rows are remembered per process (records.rowmemo) for the same reason."""
    from records import exportmemo, rowmemo

    rowmemo.forget_all()
    # And each engine's last body (records.exportmemo): correct whatever the database
    # holds, but a leftover would change what a test counts.
    exportmemo.forget_all()
    yield


@pytest.fixture
def fresh_use_counts():
    """Blob use counts are buffered per process; rows from an earlier test may share ids."""
    from blobs import services

    services._uses.clear()
    services._last_sweep[0] = None
    yield
    services._uses.clear()


@pytest.fixture
def builtin(settings, tmp_path):
    """The built-in blob storage, in a directory of its own."""
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "blobs"},
        },
    }
