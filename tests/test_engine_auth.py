"""Engine authentication: HTTP Basic, token as user name, empty password."""

import base64

import pytest

from accounts.models import EngineToken
from tests.support import basic, engine_request

CONFIG = "/magicache/config"
BODY = {"EngineID": "e1"}


def call(client, **headers):
    return engine_request(client, "GET", CONFIG, body=BODY, **headers)


@pytest.mark.django_db
class TestEngineAuth:
    def test_valid_token(self, client, token):
        assert engine_request(client, "GET", CONFIG, token=token, body=BODY).status_code == 200

    def test_no_credentials(self, client, org):
        resp = call(client)
        assert resp.status_code == 401
        assert resp.json()["error"]
        assert resp["WWW-Authenticate"].startswith("Basic")

    def test_unknown_token(self, client, token):
        resp = call(client, HTTP_AUTHORIZATION=basic(token[:-4] + "abcd"))
        assert resp.status_code == 401
        assert "unknown" in resp.json()["error"]

    def test_not_a_token(self, client, org):
        assert call(client, HTTP_AUTHORIZATION=basic("hunter2")).status_code == 401

    def test_revoked_token(self, client, org):
        row, value = EngineToken.issue(org)
        row.revoke()
        resp = call(client, HTTP_AUTHORIZATION=basic(value))
        assert resp.status_code == 401

    def test_wrong_scheme(self, client, token):
        resp = call(client, HTTP_AUTHORIZATION=f"Bearer {token}")
        assert resp.status_code == 401
        assert "Basic" in resp.json()["error"]

    def test_password_must_be_empty(self, client, token):
        assert call(client, HTTP_AUTHORIZATION=basic(token, "secret")).status_code == 401

    def test_malformed_base64(self, client, org):
        assert call(client, HTTP_AUTHORIZATION="Basic !!!notbase64").status_code == 401

    def test_no_colon(self, client, token):
        raw = base64.b64encode(token.encode()).decode()
        assert call(client, HTTP_AUTHORIZATION=f"Basic {raw}").status_code == 401

    def test_read_only_token_authenticates(self, client, ro_token):
        resp = engine_request(client, "GET", CONFIG, token=ro_token, body=BODY)
        assert resp.status_code == 200

    def test_read_only_is_marked(self, org, ro_token, token):
        assert EngineToken.objects.find(ro_token).read_only is True
        assert EngineToken.objects.find(token).read_only is False

    def test_token_of_other_org_sees_other_org(self, client, other_org, other_token):
        other_org.import_period = 42
        other_org.save()
        resp = engine_request(client, "GET", CONFIG, token=other_token, body=BODY)
        assert resp.json()["ImportPeriod"] == 42 * 10**9


@pytest.mark.django_db
class TestTokenStorage:
    def test_only_hash_is_stored(self, org):
        row, value = EngineToken.issue(org)
        row.refresh_from_db()
        assert value.startswith("cwt_")
        stored = [str(getattr(row, f.attname)) for f in row._meta.fields]
        assert not any(value in field for field in stored)
        assert value.startswith(row.prefix)

    def test_tokens_are_unique_and_long(self, org):
        values = {EngineToken.issue(org)[1] for _ in range(20)}
        assert len(values) == 20
        assert all(len(v) >= 40 for v in values)

    def test_last_used_written_at_most_once_a_minute(self, client, org, time_machine):
        time_machine.move_to("2026-01-01T10:00:00Z", tick=False)
        row, value = EngineToken.issue(org)
        engine_request(client, "GET", CONFIG, token=value, body=BODY)
        row.refresh_from_db()
        first = row.last_used_at
        assert first is not None
        time_machine.move_to("2026-01-01T10:00:30Z", tick=False)
        engine_request(client, "GET", CONFIG, token=value, body=BODY)
        row.refresh_from_db()
        assert row.last_used_at == first
        time_machine.move_to("2026-01-01T10:01:01Z", tick=False)
        engine_request(client, "GET", CONFIG, token=value, body=BODY)
        row.refresh_from_db()
        assert row.last_used_at > first


@pytest.mark.django_db
def test_non_ascii_credentials_are_401_not_500(client, org):
    assert call(client, HTTP_AUTHORIZATION="Basic \u00e9\u00e9").status_code == 401


@pytest.mark.django_db
def test_token_with_odd_characters_is_never_looked_up(client, org, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert EngineToken.objects.find("cwt_abcdefgh\x00zz") is None
    assert call(client, HTTP_AUTHORIZATION=basic("cwt_abcdefgh\x00zz")).status_code == 401
