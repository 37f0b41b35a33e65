"""The operator API's credentials: personal API tokens (Bearer), sessions with CSRF, and
what each refuses; the profile page and the command that create them."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from accounts.models import EngineToken
from api.models import ApiToken
from tests.support import basic, engine_request

pytestmark = pytest.mark.django_db
ORG_URL = "/api/v1/orgs/acme/"
TOKENS_URL = "/api/v1/orgs/acme/engine-tokens/"


def bearer(value):
    return {"HTTP_AUTHORIZATION": f"Bearer {value}"}


def issue(user, **fields):
    return ApiToken.issue(user, **fields)[1]


def test_a_bearer_api_token_acts_as_its_user(client, operators):
    value = issue(operators["viewer"])
    answer = client.get(ORG_URL, **bearer(value))
    assert answer.status_code == 200
    assert answer.json()["slug"] == "acme"
    assert value.startswith("cwu_")
    row = ApiToken.objects.get()
    assert row.last_used_at is not None
    # Only a hash and the lookup prefix are kept.
    assert value not in {row.token_hash, row.lookup} and row.prefix == value[:12]


def test_no_credentials_is_a_json_401(client, operators):
    answer = client.get(ORG_URL)
    assert answer.status_code == 401
    assert answer.json()["error"]
    assert answer["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer cwu_notarealtokenatall", "Bearer hunter2", "Token abc", basic("x")])
def test_unknown_or_malformed_credentials_are_401(client, operators, header):
    answer = client.get(ORG_URL, HTTP_AUTHORIZATION=header)
    assert answer.status_code == 401
    assert answer.json()["error"]


def test_engine_tokens_are_refused_here(client, operators, token):
    for header in (f"Bearer {token}", basic(token)):
        answer = client.get(ORG_URL, HTTP_AUTHORIZATION=header)
        assert answer.status_code == 401, header
    assert "engine tokens" in client.get(ORG_URL, **bearer(token)).json()["error"]


def test_api_tokens_do_not_work_on_the_engine_endpoints(client, operators, org):
    value = issue(operators["maintainer"])
    answer = engine_request(client, "GET", "/magicache/config", token=value, body={"EngineID": "e1"})
    assert answer.status_code == 401
    bearer_answer = engine_request(client, "GET", "/magicache/config", body={"EngineID": "e1"}, **bearer(value))
    assert bearer_answer.status_code == 401


def test_expired_and_revoked_tokens_are_401_with_a_reason(client, operators):
    expired_row, expired = ApiToken.issue(operators["viewer"], expires_days=1)
    ApiToken.objects.filter(pk=expired_row.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    revoked_row, revoked = ApiToken.issue(operators["viewer"])
    revoked_row.revoke()
    answer = client.get(ORG_URL, **bearer(expired))
    assert answer.status_code == 401 and "expired" in answer.json()["error"]
    answer = client.get(ORG_URL, **bearer(revoked))
    assert answer.status_code == 401 and "revoked" in answer.json()["error"]
    # A token that has not expired yet works.
    assert client.get(ORG_URL, **bearer(issue(operators["viewer"], expires_days=1))).status_code == 200


def test_an_inactive_users_token_is_refused(client, operators):
    value = issue(operators["viewer"])
    operators["viewer"].is_active = False
    operators["viewer"].save()
    assert client.get(ORG_URL, **bearer(value)).status_code == 401


def test_a_read_only_token_cannot_write_even_for_a_maintainer(client, operators, org):
    value = issue(operators["maintainer"], read_only=True)
    assert client.get(TOKENS_URL, **bearer(value)).status_code == 200
    answer = client.post(TOKENS_URL, {"label": "ci"}, content_type="application/json", **bearer(value))
    assert answer.status_code == 403
    assert "read-only" in answer.json()["error"]
    assert not EngineToken.objects.filter(organization=org).exists()
    # The same maintainer with a read-write token may.
    rw = issue(operators["maintainer"])
    assert client.post(TOKENS_URL, {"label": "ci"}, content_type="application/json", **bearer(rw)).status_code == 201


def test_session_reads_and_writes_need_csrf(operators, org):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operators["maintainer"])
    assert browser.get(ORG_URL).status_code == 200
    refused = browser.post(TOKENS_URL, {"label": "ci"}, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]
    assert not EngineToken.objects.exists()
    browser.get("/profile/tokens/")  # sets the CSRF cookie
    csrf = browser.cookies["csrftoken"].value
    made = browser.post(TOKENS_URL, {"label": "ci"}, content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
    assert made.status_code == 201


def test_bearer_writes_need_no_csrf(operators, org):
    browser = Client(enforce_csrf_checks=True)
    value = issue(operators["maintainer"])
    assert browser.post(TOKENS_URL, {}, content_type="application/json", **bearer(value)).status_code == 201


def test_unknown_api_paths_are_json_404(client):
    answer = client.get("/api/v1/no-such-thing/")
    assert answer.status_code == 404
    assert answer.json() == {"error": "no such endpoint"}


# ---- createapitoken ----------------------------------------------------------------------


def test_createapitoken_prints_the_token_last(operators, capsys):
    call_command("createapitoken", "victor", "--read-only", "--label", "laptop", "--expires-days", "7")
    value = capsys.readouterr().out.strip().splitlines()[-1]
    row = ApiToken.objects.matching(value)
    assert row.user == operators["viewer"] and row.read_only and row.label == "laptop"
    assert timedelta(days=6, hours=23) < row.expires_at - timezone.now() <= timedelta(days=7)


def test_createapitoken_refuses_an_unknown_user(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no user"):
        call_command("createapitoken", "nobody")
    assert not ApiToken.objects.exists()


# ---- the profile page --------------------------------------------------------------------


def test_profile_needs_login(client):
    answer = client.get("/profile/tokens/")
    assert answer.status_code == 302 and "/login/" in answer["Location"]


def test_creating_a_token_shows_it_once_and_a_reload_creates_none(client, operators):
    client.force_login(operators["viewer"])
    answer = client.post("/profile/tokens/", {"label": "laptop", "expires_days": "30"})
    assert answer.status_code == 302 and answer["Location"] == "/profile/tokens/"
    page = client.get("/profile/tokens/").content.decode()
    row = ApiToken.objects.get()
    value = page.split('id="new-token-value">')[1].split("<")[0]
    assert ApiToken.objects.matching(value) == row and row.label == "laptop" and row.expires_at
    # Reloading neither shows it again nor makes another.
    again = client.get("/profile/tokens/").content.decode()
    assert value not in again and row.prefix in again
    assert ApiToken.objects.count() == 1


def test_a_bad_expiry_is_refused(client, operators):
    client.force_login(operators["viewer"])
    answer = client.post("/profile/tokens/", {"expires_days": "0"})
    assert answer.status_code == 400
    assert not ApiToken.objects.exists()


def test_revoking_asks_first_and_only_for_ones_own_tokens(client, operators):
    row, value = ApiToken.issue(operators["viewer"], label="laptop")
    theirs, _ = ApiToken.issue(operators["maintainer"])
    client.force_login(operators["viewer"])
    confirm = client.get(f"/profile/tokens/{row.pk}/revoke")
    assert confirm.status_code == 200 and row.prefix in confirm.content.decode()
    row.refresh_from_db()
    assert row.revoked_at is None
    assert client.post(f"/profile/tokens/{theirs.pk}/revoke").status_code == 404
    assert client.post(f"/profile/tokens/{row.pk}/revoke").status_code == 302
    row.refresh_from_db()
    theirs.refresh_from_db()
    assert row.revoked_at is not None and theirs.revoked_at is None
    assert client.get(ORG_URL, **bearer(value)).status_code == 401


def test_server_errors_under_api_are_json(rf):
    from cacheweb.urls import handler500

    answer = handler500(rf.get("/api/v1/orgs/"))
    assert answer.status_code == 500 and answer["Content-Type"] == "application/json"
    assert handler500(rf.get("/orgs/acme/"))["Content-Type"].startswith("text/html")


def test_admin_lists_api_tokens_without_their_values(client, operators, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="pw-root-123")
    row, value = ApiToken.issue(operators["viewer"], label="laptop")
    client.force_login(root)
    page = client.get("/admin/api/apitoken/")
    assert page.status_code == 200
    html = page.content.decode()
    assert row.prefix in html and value not in html and row.token_hash not in html
    assert client.get("/admin/api/apitoken/add/").status_code == 403
