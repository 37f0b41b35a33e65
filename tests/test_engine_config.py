"""GET /magicache/config and the engine registry."""

import pytest

from accounts.models import Engine
from tests.support import basic, chunked_request, engine_request


@pytest.fixture
def live_service(module_live_service, transactional_db):
    """The module's one server (tests/conftest.py): these tests only read its answers."""
    return module_live_service


CONFIG = "/magicache/config"
NS = 10**9


@pytest.mark.django_db
class TestConfig:
    def test_durations_in_nanoseconds(self, client, org, token):
        org.import_period, org.export_period, org.export_timeout = 60, 120, 900
        org.save()
        resp = engine_request(client, "GET", CONFIG, token=token, body={"EngineID": "e1"})
        assert resp.status_code == 200
        assert resp.json() == {"ImportPeriod": 60 * NS, "ExportPeriod": 120 * NS, "ExportTimeout": 900 * NS}

    def test_defaults_are_never_zero(self, client, token):
        data = engine_request(client, "GET", CONFIG, token=token, body={"EngineID": "e1"}).json()
        assert set(data) == {"ImportPeriod", "ExportPeriod", "ExportTimeout"}
        assert all(isinstance(v, int) and v > 0 for v in data.values())

    def test_unknown_fields_ignored(self, client, token):
        resp = engine_request(client, "GET", CONFIG, token=token, body={"EngineID": "e1", "Future": [1, 2]})
        assert resp.status_code == 200

    def test_malformed_json_is_400_and_records_nothing(self, client, token):
        resp = engine_request(client, "GET", CONFIG, token=token, raw=b'{"EngineID": "e1"')
        assert resp.status_code == 400
        assert "JSON" in resp.json()["error"]
        assert not Engine.objects.exists()

    @pytest.mark.parametrize("body", [b"[1,2]", b'"e1"', b'{"EngineID": 5}', b'{"EngineID": ["a"]}'])
    def test_wrong_types_are_400(self, client, token, body):
        resp = engine_request(client, "GET", CONFIG, token=token, raw=body)
        assert resp.status_code == 400
        assert resp.json()["error"]
        assert not Engine.objects.exists()

    def test_overlong_engine_id_is_400(self, client, token):
        resp = engine_request(client, "GET", CONFIG, token=token, body={"EngineID": "x" * 300})
        assert resp.status_code == 400

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
    def test_wrong_method_is_405(self, client, token, method):
        resp = engine_request(client, method, CONFIG, token=token, body={"EngineID": "e1"})
        assert resp.status_code == 405
        assert resp.json()["error"]

    def test_trailing_slash_is_not_redirected(self, client, token):
        resp = engine_request(client, "GET", CONFIG + "/", token=token, body={"EngineID": "e1"})
        assert resp.status_code == 404
        assert resp.json() == {"error": "no such endpoint"}

    def test_unknown_endpoint_is_json_404(self, client, token):
        resp = engine_request(client, "GET", "/magicache/nope", token=token)
        assert resp.status_code == 404
        assert resp["Content-Type"] == "application/json"


@pytest.mark.django_db
class TestEngineRegistry:
    def test_first_call_records_engine(self, client, org, token):
        engine_request(client, "GET", CONFIG, token=token, body={"EngineID": "e1"},
                       HTTP_USER_AGENT="Go-http-client/1.1", REMOTE_ADDR="10.1.2.3")
        engine = Engine.objects.get()
        assert (engine.organization, engine.engine_id) == (org, "e1")
        assert engine.remote_addr == "10.1.2.3"
        assert engine.user_agent == "Go-http-client/1.1"
        assert engine.first_seen == engine.last_seen

    def test_second_call_updates_last_seen_only(self, client, org, token, time_machine):
        time_machine.move_to("2026-03-01T10:00:00Z", tick=False)
        engine_request(client, "GET", CONFIG, token=token, body={"EngineID": "e1"}, REMOTE_ADDR="10.0.0.1")
        time_machine.move_to("2026-03-01T11:00:00Z", tick=False)
        engine_request(client, "GET", CONFIG, token=token, body={"EngineID": "e1"}, REMOTE_ADDR="10.0.0.2")
        engine = Engine.objects.get()
        assert engine.first_seen.hour == 10
        assert engine.last_seen.hour == 11
        assert engine.remote_addr == "10.0.0.2"

    def test_same_engine_id_in_two_orgs_is_two_engines(self, client, token, other_token):
        engine_request(client, "GET", CONFIG, token=token, body={"EngineID": "e1"})
        engine_request(client, "GET", CONFIG, token=other_token, body={"EngineID": "e1"})
        assert sorted(Engine.objects.values_list("organization__slug", flat=True)) == ["acme", "globex"]

    def test_unauthenticated_call_records_nothing(self, client, org):
        engine_request(client, "GET", CONFIG, body={"EngineID": "e1"})
        assert not Engine.objects.exists()


@pytest.mark.django_db(transaction=True)
class TestThroughTheRealServer:
    """The Go client's exact shape: GET, JSON body in chunks, no Content-Length."""

    def headers(self, token):
        return {"Authorization": basic(token), "Content-Type": "application/json",
                "User-Agent": "Go-http-client/1.1", "Accept-Encoding": "gzip"}

    def test_chunked_get_body_reaches_the_view(self, live_service, org, token):
        status, _, body = chunked_request(live_service.url, "GET", CONFIG, self.headers(token),
                                          [b"{", b'"EngineID":"e1"}\n'])
        assert status == 200, body
        assert Engine.objects.get().engine_id == "e1"

    def test_chunked_malformed_body_is_400(self, live_service, org, token):
        status, _, body = chunked_request(live_service.url, "GET", CONFIG, self.headers(token),
                                          [b"{", b'"EngineID":'])
        assert status == 400
        assert b"JSON" in body
        assert not Engine.objects.exists()

    def test_chunked_oversize_body_is_413(self, transactional_db, org, token):
        from tests.support import LiveService

        service = LiveService(CACHEWEB_MAX_ENGINE_BODY=2048)
        try:
            chunks = [b'{"EngineID":"e1","Pad":"'] + [b"x" * 1000] * 5 + [b'"}\n']
            status, headers, body = chunked_request(service.url, "GET", CONFIG, self.headers(token), chunks)
        finally:
            service.stop()
        assert status == 413
        assert headers["content-type"] == "application/json"
        assert not Engine.objects.exists()

    def test_unauthenticated_through_server_is_401(self, live_service, org):
        headers = {"Content-Type": "application/json"}
        status, _, body = chunked_request(live_service.url, "GET", CONFIG, headers, [b'{"EngineID":"e1"}\n'])
        assert status == 401
        assert b"error" in body


@pytest.mark.django_db
def test_nul_in_engine_id_is_400(client, token):
    resp = engine_request(client, "GET", CONFIG, token=token, body={"EngineID": "a\u0000b"})
    assert resp.status_code == 400
    assert not Engine.objects.exists()


@pytest.mark.django_db
def test_periods_stay_within_go_durations(client, org, token):
    from accounts.models import MAX_PERIOD

    # A row edited past the validators still gives engines a period they can decode.
    org.import_period = 2_000_000_000
    org.save()
    data = engine_request(client, "GET", CONFIG, token=token, body={"EngineID": "e1"}).json()
    assert data["ImportPeriod"] == MAX_PERIOD * NS < 2**63
