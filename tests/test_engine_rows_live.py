"""The engine table is bounded: /config with new engine ids, from any token, keeps at
most CACHEWEB_ENGINES_PER_ORG rows per organization, pruning the longest idle."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Engine
from tests.support import LiveService, basic, chunked_request, engine_request

CONFIG = "/magicache/config"


def test_hundreds_of_new_ids_through_gunicorn_keep_the_cap(transactional_db, org, ro_token, token, other_token):
    service = LiveService(CACHEWEB_ENGINES_PER_ORG=50)
    try:
        def config(tok, engine_id):
            raw = json.dumps({"EngineID": engine_id}).encode() + b"\n"
            status, _, body = chunked_request(
                service.url, "GET", CONFIG,
                {"Authorization": basic(tok), "Content-Type": "application/json"}, [raw[:1], raw[1:]],
            )
            assert status == 200, body
        config(token, "real-engine")
        for n in range(600):  # twelve times the cap
            config(ro_token, f"ci-job-{n}")
        config(other_token, "elsewhere")
    finally:
        service.stop()
    assert Engine.objects.filter(organization=org).count() == 50
    ids = set(Engine.objects.filter(organization=org).values_list("engine_id", flat=True))
    assert ids == {f"ci-job-{n}" for n in range(550, 600)}  # the 50 seen last
    assert Engine.objects.filter(engine_id="elsewhere").count() == 1  # other orgs untouched


def test_known_engines_stay_while_idle_ones_go(client, org, token, settings):
    settings.ENGINES_PER_ORG = 3
    now = timezone.now()
    for n, age in enumerate([10, 20, 30]):
        Engine.objects.create(organization=org, engine_id=f"e{n}", last_seen=now - timedelta(minutes=age))
    # A known engine calling again creates nothing and prunes nothing.
    engine_request(client, "GET", CONFIG, token=token, body={"EngineID": "e2"})
    assert Engine.objects.filter(organization=org).count() == 3
    # A new one pushes out the longest idle (now e1: e2 was just seen).
    engine_request(client, "GET", CONFIG, token=token, body={"EngineID": "new"})
    assert set(Engine.objects.values_list("engine_id", flat=True)) == {"e0", "e2", "new"}
    # Lowering the cap prunes down to it at the next new engine.
    settings.ENGINES_PER_ORG = 1
    engine_request(client, "GET", CONFIG, token=token, body={"EngineID": "newer"})
    assert list(Engine.objects.values_list("engine_id", flat=True)) == ["newer"]
