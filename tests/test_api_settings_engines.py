"""/api/v1/: changing an organization's settings, and its engines, per role."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import MAX_PERIOD, Engine, EngineToken, Organization
from api.models import ApiToken

pytestmark = pytest.mark.django_db
ORG = "/api/v1/orgs/acme/"
ENGINES = "/api/v1/orgs/acme/engines/"


@pytest.fixture
def as_(operators):
    def header(role, **fields):
        return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(operators[role], **fields)[1]}"}

    return header


def patch(client, path, body, header):
    return client.patch(path, body, content_type="application/json", **header)


# ---- settings --------------------------------------------------------------------------


def test_a_maintainer_changes_settings_and_the_others_keep_theirs(client, as_, org):
    before = Organization.objects.get(pk=org.pk)
    answer = patch(client, ORG, {"import_period": 120, "export_timeout": 900}, as_("maintainer"))
    assert answer.status_code == 200, answer.content
    org.refresh_from_db()
    assert (org.import_period, org.export_timeout) == (120, 900)
    assert (org.export_period, org.name) == (before.export_period, before.name)
    assert answer.json()["import_period"] == 120 and answer.json()["export_timeout"] == 900
    assert patch(client, ORG, {"name": "Acme Corp", "export_period": 60}, as_("maintainer")).status_code == 200
    org.refresh_from_db()
    assert (org.name, org.export_period, org.import_period) == ("Acme Corp", 60, 120)
    # Engines read it at their next start.
    assert org.engine_config()["ImportPeriod"] == 120 * 1_000_000_000


def test_settings_per_role(client, as_, org, other_org):
    body = {"import_period": 77}
    assert patch(client, ORG, body, as_("outsider")).status_code == 404
    assert patch(client, "/api/v1/orgs/globex/", body, as_("maintainer")).status_code == 404
    viewer = patch(client, ORG, body, as_("viewer"))
    assert viewer.status_code == 403 and viewer.json()["error"]
    read_only = patch(client, ORG, body, as_("maintainer", read_only=True))
    assert read_only.status_code == 403 and "read-only" in read_only.json()["error"]
    assert client.patch(ORG, body, content_type="application/json").status_code == 401
    org.refresh_from_db()
    assert org.import_period != 77


@pytest.mark.parametrize(
    "body,field",
    [
        ({"import_period": 0}, "import_period"),
        ({"export_period": MAX_PERIOD + 1}, "export_period"),
        ({"export_timeout": -5}, "export_timeout"),
        ({"import_period": 10**40}, "import_period"),
        ({"import_period": "60"}, "import_period"),
        ({"import_period": 1.5}, "import_period"),
        ({"import_period": True}, "import_period"),
        ({"import_period": None}, "import_period"),
        ({"name": "x" * 201}, "name"),
        ({"name": 5}, "name"),
        ({"name": "nul\x00"}, "name"),
        ({"slug": "renamed"}, "slug"),
        ({"created_at": "2020-01-01T00:00:00Z"}, "created_at"),
    ],
)
def test_bad_settings_are_400_naming_the_field(client, as_, org, body, field):
    before = Organization.objects.get(pk=org.pk)
    answer = patch(client, ORG, body, as_("maintainer"))
    assert answer.status_code == 400, answer.content
    assert field in answer.json()["fields"]
    org.refresh_from_db()
    assert (org.slug, org.name, org.import_period, org.export_period, org.export_timeout) == (
        before.slug, before.name, before.import_period, before.export_period, before.export_timeout,
    )


@pytest.mark.parametrize("raw", ["[1, 2]", '"text"', "{not json", "12"])
def test_a_body_that_is_not_an_object_is_400(client, as_, org, raw):
    answer = client.patch(ORG, raw, content_type="application/json", **as_("maintainer"))
    assert answer.status_code == 400 and answer.json()["error"]


def test_an_empty_patch_changes_nothing(client, as_, org):
    answer = patch(client, ORG, {}, as_("maintainer"))
    assert answer.status_code == 200 and answer.json()["import_period"] == org.import_period


def test_the_api_refuses_what_the_dashboard_form_refuses(client, as_, operators, org):
    """One validation: the dashboard's settings form answers the same for the same value."""
    client.force_login(operators["maintainer"])
    page = client.post("/orgs/acme/", {"import_period": MAX_PERIOD + 1, "export_period": 60, "export_timeout": 60})
    assert page.status_code == 200  # the form again, with its error
    dashboard_error = page.context["form"].errors["import_period"]
    client.logout()
    answer = patch(client, ORG, {"import_period": MAX_PERIOD + 1}, as_("maintainer"))
    assert answer.json()["fields"]["import_period"] == " ".join(dashboard_error)


# ---- engines ---------------------------------------------------------------------------


@pytest.fixture
def engines(org, other_org):
    now = timezone.now()
    token, _ = EngineToken.issue(org, label="ci")
    rows = {}
    for name, first, last in [("bravo", 5, 1), ("alpha", 3, 2), ("charlie", 9, 0)]:
        rows[name] = Engine.objects.create(
            organization=org, engine_id=name, first_seen=now - timedelta(days=first),
            last_seen=now - timedelta(hours=last), remote_addr="10.0.0.7", user_agent=f"dagger/{name}",
            last_token=token if name != "alpha" else None,
        )
    Engine.objects.create(organization=other_org, engine_id="theirs")
    return rows, token


def test_engines_listed_as_the_dashboard_shows_them(client, as_, operators, engines):
    rows, token = engines
    body = client.get(ENGINES, **as_("viewer")).json()
    assert [e["engine_id"] for e in body["results"]] == ["charlie", "bravo", "alpha"]  # last seen first
    assert body["count"] == 3
    charlie = body["results"][0]
    assert charlie == {
        "id": rows["charlie"].pk, "engine_id": "charlie", "first_seen": charlie["first_seen"],
        "last_seen": charlie["last_seen"], "address": "10.0.0.7", "client": "dagger/charlie",
        "last_token_prefix": token.prefix,
        # No activity counted for it (tests/test_api_activity.py counts some).
        "last_import": None, "last_export": None, "bytes_up": 0, "bytes_down": 0, "shared_steps": 0,
    }
    assert body["results"][2]["last_token_prefix"] is None
    # The dashboard's engines page: the same rows, in the same order, with the token prefix.
    client.force_login(operators["viewer"])
    page = client.get("/orgs/acme/engines/")
    assert [e.engine_id for e in page.context["engines"]] == ["charlie", "bravo", "alpha"]
    assert token.prefix in page.content.decode()


@pytest.mark.parametrize(
    "sort,order",
    [
        ("engine_id", ["alpha", "bravo", "charlie"]),
        ("-engine_id", ["charlie", "bravo", "alpha"]),
        ("first_seen", ["charlie", "bravo", "alpha"]),
        ("-first_seen", ["alpha", "bravo", "charlie"]),
        ("last_seen", ["alpha", "bravo", "charlie"]),
    ],
)
def test_engines_sorted(client, as_, engines, sort, order):
    body = client.get(ENGINES, {"sort": sort}, **as_("viewer")).json()
    assert [e["engine_id"] for e in body["results"]] == order


def test_engines_paged(client, as_, engines):
    header = as_("viewer")
    first = client.get(ENGINES, {"sort": "engine_id", "page_size": 2}, **header).json()
    assert [e["engine_id"] for e in first["results"]] == ["alpha", "bravo"] and first["next"]
    second = client.get(first["next"], **header).json()
    assert [e["engine_id"] for e in second["results"]] == ["charlie"] and second["next"] is None


@pytest.mark.parametrize(
    "params,field",
    [({"sort": "address"}, "sort"), ({"sort": "-"}, "sort"), ({"page": "0"}, "page"), ({"page_size": "x"}, "page_size")],
)
def test_bad_engine_parameters_are_400(client, as_, engines, params, field):
    answer = client.get(ENGINES, params, **as_("viewer"))
    assert answer.status_code == 400 and field in answer.json()["fields"]


def test_one_engine(client, as_, engines, other_org):
    rows, token = engines
    body = client.get(f"{ENGINES}{rows['bravo'].pk}/", **as_("viewer")).json()
    assert body["engine_id"] == "bravo" and body["last_token_prefix"] == token.prefix
    theirs = Engine.objects.get(engine_id="theirs")
    assert client.get(f"{ENGINES}{theirs.pk}/", **as_("viewer")).status_code == 404
    assert client.get(f"{ENGINES}99999999999999999999/", **as_("viewer")).status_code == 404


def test_engines_per_role(client, as_, engines):
    rows, _ = engines
    for path in (ENGINES, f"{ENGINES}{rows['alpha'].pk}/"):
        assert client.get(path, **as_("outsider")).status_code == 404
        assert client.get(path, **as_("viewer")).status_code == 200
        assert client.get(path, **as_("maintainer", read_only=True)).status_code == 200
        assert client.get(path).status_code == 401
        # Reads only: no write methods.
        assert client.delete(path, **as_("maintainer")).status_code == 405


def test_an_engines_page_costs_the_same_queries_however_many_rows(client, as_, org):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for i in range(3):
        token, _ = EngineToken.issue(org, label=f"t{i}")
        Engine.objects.create(organization=org, engine_id=f"e{i}", last_token=token)
    header = as_("viewer")
    client.get("/api/v1/orgs/", **header)  # the token's last use is written once a minute: now

    def cost(size):
        with CaptureQueriesContext(connection) as queries:
            answer = client.get(ENGINES, {"page_size": size}, **header)
        assert answer.status_code == 200 and len(answer.json()["results"]) == size
        assert all(e["last_token_prefix"] for e in answer.json()["results"])
        return len(queries)

    assert cost(1) == cost(3)
