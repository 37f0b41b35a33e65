"""A dependency that fails (database, object store, broker) is a 503 with Retry-After:
JSON on engine, blob and operator API paths, a styled page elsewhere; never a 500, never
HTML on /blobs. Publishing a task is bounded and its failure is BrokerUnavailable; work
queued after a commit never fails the request. The access log keeps no secret whole.
(tests/test_faults_live.py makes the dependencies really fail.)"""

import logging
from types import SimpleNamespace

import pytest
from botocore.exceptions import EndpointConnectionError
from django.db import OperationalError
from django.test import override_settings
from kombu.exceptions import OperationalError as KombuOperationalError

from cacheweb import dependencies
from cacheweb.accesslog import RedactingLogger, redact_uri
from tests.support import engine_request


def assert_json_503(response, part):
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/json"
    assert int(response["Retry-After"]) > 0
    assert response.json()["unavailable"] == part
    assert "retry later" in response.json()["error"]


@pytest.fixture
def down(monkeypatch):
    """down(target, exc): calling `target` (a dotted path) raises `exc`."""

    def apply(target, exc):
        def fail(*args, **kwargs):
            raise exc

        monkeypatch.setattr(target, fail)

    return apply


@pytest.mark.django_db
class TestUnavailableIsA503:
    def test_engine_call_with_the_database_down(self, client, token, down):
        down("accounts.auth.resolve_token", OperationalError("connection refused"))
        assert_json_503(engine_request(client, "GET", "/magicache/config", token, {"EngineID": "e"}), "database")

    def test_engine_call_with_the_object_store_down(self, client, token, down):
        down("blobs.services.upload_target", EndpointConnectionError(endpoint_url="http://s3"))
        digest = "sha256:" + "a" * 64
        response = engine_request(client, "GET", "/magicache/layerUploadURL", token, {"Digest": digest})
        assert_json_503(response, "storage")

    def test_blob_url_with_the_database_down_is_json_never_html(self, client, org, token, builtin, down):
        digest = "sha256:" + "b" * 64
        from blobs import signing

        query = signing.signed_query(org.pk, digest, "GET", 3600)
        down("blobs.services.open_builtin_blob", OperationalError("server closed the connection"))
        response = client.get(f"/blobs/{org.pk}/{digest}", query)
        assert_json_503(response, "database")
        assert b"<" not in response.content

    def test_operator_api_with_the_database_down(self, client, down):
        down("api.auth.ApiTokenAuthentication.authenticate", OperationalError("timeout expired"))
        response = client.get("/api/v1/orgs/", HTTP_AUTHORIZATION="Bearer cwu_whatever")
        assert_json_503(response, "database")

    def test_page_with_the_database_down_is_a_styled_message(self, client, down):
        down("django.contrib.sessions.backends.db.SessionStore.load", OperationalError("no route to host"))
        client.cookies["sessionid"] = "x" * 32
        response = client.get("/")
        assert response.status_code == 503
        assert response["Retry-After"]
        page = response.content.decode()
        assert "Temporarily unavailable" in page and "the database is unavailable" in page
        assert "cacheweb.css" in page

    @override_settings(MIDDLEWARE=["tests.test_dependency_errors.DatabaseDownMiddleware"])
    def test_raised_by_a_middleware_reaches_the_same_503(self, client):
        client.raise_request_exception = False
        assert_json_503(client.get("/magicache/config"), "database")
        assert_json_503(client.get("/blobs/1/sha256:" + "c" * 64), "database")
        page = client.get("/login/")
        assert page.status_code == 503 and b"Temporarily unavailable" in page.content

    def test_other_errors_stay_500(self, client, token, down):
        client.raise_request_exception = False
        down("accounts.auth.resolve_token", ValueError("a bug"))
        response = engine_request(client, "GET", "/magicache/config", token, {"EngineID": "e"})
        assert response.status_code == 500 and response.json() == {"error": "internal error"}


class DatabaseDownMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        raise OperationalError("could not connect to server")


# ---- the broker ---------------------------------------------------------------------------


@pytest.mark.once
def test_publish_failure_is_broker_unavailable(monkeypatch):
    from records.tasks import rebuild_import

    def refuse(*args, **kwargs):
        assert kwargs["retry"] is True and kwargs["retry_policy"]["max_retries"] >= 0
        raise KombuOperationalError("Error 111 connecting to 127.0.0.1:6379")

    monkeypatch.setattr(rebuild_import, "apply_async", refuse)
    with pytest.raises(dependencies.BrokerUnavailable, match="could not queue"):
        dependencies.publish(rebuild_import, 1)


@pytest.mark.once
def test_filesystem_broker_directory_gone_is_broker_unavailable(monkeypatch):
    from records.tasks import rebuild_import

    def refuse(*args, **kwargs):
        raise NotADirectoryError(20, "Not a directory")

    monkeypatch.setattr(rebuild_import, "apply_async", refuse)
    with pytest.raises(dependencies.BrokerUnavailable):
        dependencies.publish(rebuild_import, 1)


@pytest.mark.django_db
def test_mount_upload_url_answers_200_with_the_broker_down(
    client, token, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    from mounts import tasks

    def refuse(*args, **kwargs):
        raise KombuOperationalError("timed out")

    monkeypatch.setattr(tasks.confirm_snapshot_upload, "apply_async", refuse)
    digest = "sha256:" + "d" * 64
    with caplog.at_level(logging.WARNING, "cacheweb.outbox"), django_capture_on_commit_callbacks(execute=True):
        response = engine_request(client, "GET", "/magicache/cacheMountUploadURL", token,
                                  {"CacheName": "go-mod", "Digest": digest, "Size": 10})
    assert response.status_code == 200, response.content
    assert response.json()["Skip"] is False and response.json()["URL"]
    assert "could not queue" in caplog.text and "left for the outbox sweep" in caplog.text
    from cacheweb.models import OutboxTask

    assert OutboxTask.objects.filter(task=tasks.confirm_snapshot_upload.name).count() == 1


# ---- the access log -----------------------------------------------------------------------


@pytest.mark.once
def test_access_log_keeps_a_prefix_of_tokens_and_signatures():
    token = "cwt_ABCDEFGH" + "z" * 40
    sig = "s" * 43
    environ = {
        "REQUEST_METHOD": "GET", "RAW_URI": f"/blobs/1/sha256:ab?expires=9&sig={sig}", "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": "/blobs/1/sha256:ab", "QUERY_STRING": f"expires=9&sig={sig}",
        "HTTP_AUTHORIZATION": "Basic " + "q" * 40, "REMOTE_ADDR": "127.0.0.1",
    }
    logger = RedactingLogger.__new__(RedactingLogger)
    logger._get_user = lambda environ: token
    logger.now = lambda: "[now]"
    resp = SimpleNamespace(status="200 OK", sent=3, headers=[])
    req = SimpleNamespace(headers=[("AUTHORIZATION", "Basic " + "q" * 40)])
    atoms = logger.atoms(resp, req, environ, SimpleNamespace(seconds=0, microseconds=5))
    line = " ".join(str(v) for v in atoms.values())
    assert token not in line and sig not in line and "q" * 40 not in line
    assert atoms["u"] == "cwt_ABCDEFGH…"
    assert atoms["r"] == "GET /blobs/1/sha256:ab?expires=9&sig=ssssss… HTTP/1.1"
    assert atoms["{authorization}i"] == "Basic …"
    # S3's presigned query parameters too; other parameters are left alone.
    assert redact_uri("/k?X-Amz-Signature=0123456789abcdef&x=1") == "/k?X-Amz-Signature=012345…&x=1"
    assert redact_uri("/magicache/config") == "/magicache/config"
