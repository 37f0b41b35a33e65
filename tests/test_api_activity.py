"""/api/v1/: the activity series and the engines' activity fields."""

from datetime import timedelta

import pytest
import time_machine

from accounts.models import Engine
from activity import charts, selectors
from api.models import ApiToken
from tests.activity_rows import HOUR, MIB, NOW, TODAY, known_activity

pytestmark = pytest.mark.django_db
ACTIVITY = "/api/v1/orgs/acme/activity/"


@pytest.fixture
def engines(org):
    with time_machine.travel(NOW, tick=False):
        yield known_activity(org)


@pytest.fixture
def viewer(operators):
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(operators['viewer'])[1]}"}


def test_series_are_the_charts_numbers(client, engines, viewer, org):
    with time_machine.travel(NOW, tick=False):
        answer = client.get(ACTIVITY + "?range=24h", **viewer)
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["range"], body["bucket"], body["engine"]) == ("24h", "hour", None)
    assert len(body["buckets"]) == 24 and body["buckets"][-1] == HOUR.isoformat().replace("+00:00", "Z")
    series = body["series"]
    assert series["download_urls"]["values"][-1] == 8 and series["download_urls"]["total"] == 8
    assert series["bytes_up"]["values"][-3:] == [2 * MIB, 0, 4 * MIB]
    assert series["bytes_up"]["signals"] == ["layer_upload_bytes", "mount_upload_bytes"]
    assert series["exports_refused"]["total"] == 3 and series["shared_steps"]["unit"] == "count"
    assert body["storage"]["layer_bytes"][-1] == 12 * MIB and body["storage"]["layer_bytes"][0] is None
    assert [c["key"] for c in body["charts"]] == ["storage", "bytes", "skips", "reuse", "transfers"]
    # The same numbers the page draws.
    with time_machine.travel(NOW, tick=False):
        drawn = charts.activity_charts(org, selectors.window("24h"))
    for chart in drawn:
        for s in chart.series:
            assert series[s["key"]]["values"] == s["values"]


def test_one_engine_and_daily_buckets(client, engines, viewer):
    builder, laptop = engines
    with time_machine.travel(NOW, tick=False):
        body = client.get(ACTIVITY + f"?range=7d&engine={laptop.pk}", **viewer).json()
        assert body["series"]["shared_steps"]["values"] == [0, 0, 0, 0, 0, 3, 5]
        assert body["storage"] is None and body["engine"] == laptop.pk
        assert body["buckets"][0] == (TODAY - timedelta(days=6)).isoformat().replace("+00:00", "Z")
        unmatched = client.get(ACTIVITY + "?range=30d&engine=0", **viewer).json()
        assert unmatched["series"]["download_urls"]["total"] == 41
        hourly = client.get(ACTIVITY + "?range=7d&bucket=hour", **viewer).json()
        assert len(hourly["buckets"]) == 168 and hourly["series"]["shared_steps"]["total"] == 8


@pytest.mark.parametrize(
    "query, field",
    [
        ("range=1y", "range"),
        ("bucket=week", "bucket"),
        ("range=90d&bucket=hour", "bucket"),
        ("engine=abc", "engine"),
        ("engine=-1", "engine"),
        ("engine=999999", "engine"),
        ("engine=" + "9" * 30, "engine"),
    ],
)
def test_bad_parameters_are_json_400s_naming_the_field(client, engines, viewer, query, field):
    answer = client.get(f"{ACTIVITY}?{query}", **viewer)
    assert answer.status_code == 400 and answer["Content-Type"].startswith("application/json")
    assert field in answer.json()["fields"]


def test_other_organizations_engine_and_outsiders(client, engines, viewer, operators, other_org):
    theirs = Engine.objects.create(organization=other_org, engine_id="theirs")
    assert client.get(f"{ACTIVITY}?engine={theirs.pk}", **viewer).status_code == 400
    outsider = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(operators['outsider'])[1]}"}
    assert client.get(ACTIVITY, **outsider).status_code == 404
    assert client.get(ACTIVITY).status_code in (401, 403)


def test_engines_carry_their_activity_and_sort_by_it(client, engines, viewer):
    builder, laptop = engines
    answer = client.get("/api/v1/orgs/acme/engines/?sort=-shared_steps", **viewer)
    assert answer.status_code == 200, answer.content
    rows = answer.json()["results"]
    assert [r["engine_id"] for r in rows] == ["laptop-7", "ci-builder-1"]
    assert (rows[0]["shared_steps"], rows[0]["bytes_down"], rows[0]["bytes_up"], rows[0]["last_export"]) == (8, 6 * MIB, 0, None)
    assert rows[0]["last_import"] == HOUR.isoformat().replace("+00:00", "Z")
    paged = client.get("/api/v1/orgs/acme/engines/?sort=bytes_up&page_size=1&page=2", **viewer).json()
    assert [r["engine_id"] for r in paged["results"]] == ["ci-builder-1"] and paged["count"] == 2
    detail = client.get(f"/api/v1/orgs/acme/engines/{builder.pk}/", **viewer).json()
    assert (detail["bytes_up"], detail["shared_steps"]) == (6 * MIB, 0)
    assert detail["last_export"] == (HOUR - timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    assert client.get("/api/v1/orgs/acme/engines/?sort=-nope", **viewer).status_code == 400
