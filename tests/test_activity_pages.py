"""The activity on the Cache overview, the engine page and the engines list."""

import re
from datetime import timedelta

import pytest
import time_machine

from accounts.models import Engine, EngineToken, EngineTokenUse
from tests.activity_rows import HOUR, MIB, NOW, known_activity
from tests.support import engine_request


@pytest.fixture
def at_now():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def engines(org, at_now):
    return known_activity(org)


def bars(html, chart):
    """{(series, bucket): value} of a chart's bars that are not zero, and the bar count."""
    figure = re.search(rf'<figure class="chart" id="chart-{chart}".*?</figure>', html, re.S).group(0)
    found = re.findall(r'<rect class="bar [^"]*"[^>]*data-series="([^"]+)" data-bucket="([^"]+)" data-value="(\d+)"', figure)
    return {(s, b): int(v) for s, b, v in found if int(v)}, len(found)


@pytest.mark.django_db
class TestOverview:
    def test_viewer_sees_the_charts_of_the_range(self, client, operators, engines):
        client.force_login(operators["viewer"])
        resp = client.get("/orgs/acme/cache/?range=24h")
        assert resp.status_code == 200
        html = resp.content.decode()
        found, count = bars(html, "reuse")
        assert count == 48 and found == {("download_urls", HOUR.isoformat()): 8, ("shared_steps", HOUR.isoformat()): 5}
        found, count = bars(html, "bytes")
        assert found == {
            ("bytes_up", (HOUR - timedelta(hours=2)).isoformat()): 2 * MIB,
            ("bytes_up", HOUR.isoformat()): 4 * MIB,
            ("bytes_down", HOUR.isoformat()): 6 * MIB,
        }
        found, count = bars(html, "storage")
        assert count == 6 and found[("layer_bytes", HOUR.isoformat())] == 12 * MIB
        assert 'aria-current="true">24h<' in html
        assert "What these numbers can and cannot prove" in html and "best sign of reuse" in html

    def test_default_range_is_seven_days(self, client, operators, engines):
        client.force_login(operators["viewer"])
        html = client.get("/orgs/acme/cache/").content.decode()
        found, count = bars(html, "reuse")
        assert count == 14
        assert found[("shared_steps", (HOUR.replace(hour=0) - timedelta(days=1)).isoformat())] == 3
        assert "Showing the last 7 calendar days (UTC), today so far included." in html
        assert 'id="chart-skips"' in html and "8.0\xa0MB" in html

    @pytest.mark.parametrize("query", ["range=1y", "range=30d&bucket=hour", "bucket=minute", "range=%00", "range=24h&bucket=day"])
    def test_bad_range_is_a_clear_message(self, client, operators, engines, query):
        client.force_login(operators["viewer"])
        resp = client.get(f"/orgs/acme/cache/?{query}")
        assert resp.status_code == 400
        html = resp.content.decode()
        assert 'id="window-error"' in html and "instead" in html
        assert bars(html, "reuse")[1] == 14  # the default window is drawn

    def test_outsider_gets_404(self, client, operators, engines):
        client.force_login(operators["outsider"])
        assert client.get("/orgs/acme/cache/?range=24h").status_code == 404


@pytest.mark.django_db
class TestEnginePage:
    def test_shows_its_activity_only(self, client, operators, engines):
        builder, laptop = engines
        client.force_login(operators["viewer"])
        resp = client.get(f"/orgs/acme/engines/{laptop.pk}/?range=24h")
        assert resp.status_code == 200
        html = resp.content.decode()
        found, _ = bars(html, "reuse")
        assert found == {("download_urls", HOUR.isoformat()): 7, ("shared_steps", HOUR.isoformat()): 5}
        assert 'id="chart-storage"' not in html
        assert re.search(r'id="shared-steps">8<', html)
        assert re.search(r'id="bytes-down"[^>]*>6.0\xa0MB', html)
        assert "in the hour from 2026-11-30 14:00 UTC" in re.search(r'id="last-import">[^<]*', html).group(0)
        assert re.search(r'id="last-export">never', html)
        assert "a best guess" in html

        html = client.get(f"/orgs/acme/engines/{builder.pk}/?range=24h").content.decode()
        assert "in the hour from 2026-11-30 12:00 UTC" in re.search(r'id="last-export">[^<]*', html).group(0)
        found, _ = bars(html, "transfers")
        assert found[("exports_refused", (HOUR - timedelta(hours=2)).isoformat())] == 3

    def test_outsider_and_other_org_engines_are_404(self, client, operators, engines, other_org):
        builder, _ = engines
        client.force_login(operators["outsider"])
        assert client.get(f"/orgs/acme/engines/{builder.pk}/").status_code == 404
        client.force_login(operators["viewer"])
        theirs = Engine.objects.create(organization=other_org, engine_id="theirs")
        assert client.get(f"/orgs/acme/engines/{theirs.pk}/").status_code == 404
        assert client.get("/orgs/acme/engines/999999/").status_code == 404

    def test_bad_range_is_a_clear_message(self, client, operators, engines):
        client.force_login(operators["viewer"])
        resp = client.get(f"/orgs/acme/engines/{engines[0].pk}/?range=forever")
        assert resp.status_code == 400 and "range must be one of 24h, 7d, 30d, 90d" in resp.content.decode()


@pytest.mark.django_db
class TestTokensItUsed:
    def config(self, client, token, engine_id="ci-builder-1"):
        resp = engine_request(client, "GET", "/magicache/config", token, {"EngineID": engine_id})
        assert resp.status_code == 200

    def test_config_records_each_token_and_moves_last_used_at_most_once_a_minute(
        self, client, org, token, operators
    ):
        other = EngineToken.issue(org, label="second")[1]
        start = NOW.replace(second=5)
        with time_machine.travel(start, tick=False) as traveller:
            self.config(client, token)
            engine = Engine.objects.get(engine_id="ci-builder-1")
            (use,) = EngineTokenUse.objects.filter(engine=engine)
            assert (use.first_used, use.last_used) == (start, start)
            traveller.shift(timedelta(seconds=30))
            self.config(client, token)  # same minute: nothing written
            assert EngineTokenUse.objects.get(pk=use.pk).last_used == start
            traveller.shift(timedelta(seconds=30))
            self.config(client, token)  # next minute: moved on
            assert EngineTokenUse.objects.get(pk=use.pk).last_used == start + timedelta(minutes=1)
            self.config(client, other)
            assert EngineTokenUse.objects.filter(engine=engine).count() == 2

        client.force_login(operators["viewer"])
        html = client.get(f"/orgs/acme/engines/{engine.pk}/").content.decode()
        prefixes = re.findall(r'<tr data-token="([^"]+)"', html)
        by_label = {t.label: t.prefix for t in EngineToken.objects.filter(organization=org)}
        assert prefixes == [by_label["second"], by_label["rw"]]
        assert "second" in html

    def test_a_late_writer_never_moves_last_used_back(self, org, token):
        engine = Engine.objects.create(organization=org, engine_id="e")
        row = EngineToken.objects.get(organization=org, label="rw")
        EngineTokenUse.note(engine, row, NOW)
        EngineTokenUse.note(engine, row, NOW - timedelta(minutes=5))
        use = EngineTokenUse.objects.get(engine=engine)
        assert (use.first_used, use.last_used) == (NOW, NOW)


@pytest.mark.django_db
class TestEnginesList:
    def order(self, client, sort):
        resp = client.get(f"/orgs/acme/engines/?sort={sort}")
        assert resp.status_code == 200
        return re.findall(r'<a href="/orgs/acme/engines/\d+/">([^<]+)</a>', resp.content.decode())

    def test_columns_and_sorting_by_activity(self, client, operators, engines, org):
        Engine.objects.create(organization=org, engine_id="idle")
        client.force_login(operators["viewer"])
        html = client.get("/orgs/acme/engines/").content.decode()
        row = re.search(rf'<tr data-engine="{engines[1].pk}">.*?</tr>', html, re.S).group(0)
        assert re.search(r'class="num shared-steps">8<', row) and "6.0\xa0MB" in row
        # Ties go by row id, newest first when descending (as the engine row's own sorts do).
        assert self.order(client, "-shared_steps") == ["laptop-7", "idle", "ci-builder-1"]
        assert self.order(client, "shared_steps") == ["ci-builder-1", "idle", "laptop-7"]
        assert self.order(client, "-bytes_up") == ["ci-builder-1", "idle", "laptop-7"]
        assert self.order(client, "-bytes_down") == ["laptop-7", "idle", "ci-builder-1"]
        assert self.order(client, "-last_import") == ["laptop-7", "ci-builder-1", "idle"]
        assert self.order(client, "last_import") == ["idle", "ci-builder-1", "laptop-7"]
        assert self.order(client, "-last_export") == ["ci-builder-1", "idle", "laptop-7"]
        assert self.order(client, "engine_id") == ["ci-builder-1", "idle", "laptop-7"]
        # The active column's link flips it.
        assert 'href="?sort=shared_steps">Shared steps ↓' in client.get("/orgs/acme/engines/?sort=-shared_steps").content.decode()

    def test_bad_sort_is_a_clear_message(self, client, operators, engines):
        client.force_login(operators["viewer"])
        resp = client.get("/orgs/acme/engines/?sort=-password")
        assert resp.status_code == 400 and "Cannot sort by" in resp.content.decode()

    def test_overview_page_lists_engines_with_activity(self, client, operators, engines):
        client.force_login(operators["viewer"])
        html = client.get("/orgs/acme/").content.decode()
        assert re.search(r'class="num shared-steps">8<', html)
