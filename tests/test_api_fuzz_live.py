"""Schemathesis against the live schema of a real server (gunicorn, the whole WSGI stack):
every operation, with a maintainer's API token; no 5xx, and every answer conforms to the
schema (status code, content type, body)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.core.management import call_command

from accounts.models import Engine, EngineToken, Membership, Role
from api.models import ApiToken
from mounts.models import CacheMount
from tests.cache_rows import a_blob, a_layer, a_snapshot
from tests.support import LiveService, basic

CHECKS = "not_a_server_error,content_type_conformance,response_schema_conformance"
# Every status documented: on valid requests only, because invalid ones can repeat a query
# parameter until the request line passes gunicorn's 4094 bytes, and gunicorn answers 414
# before cacheweb runs.
RUNS = {
    "positive": ["--mode", "positive", "--checks", CHECKS + ",status_code_conformance"],
    "all": ["--mode", "all", "--checks", CHECKS],
}


@pytest.fixture
def cache(org):
    a_layer(org, a_blob(org, "layer", 300, uses=2), 300, results=2)
    a_blob(org, "loose", 100)
    mount = CacheMount.objects.create(organization=org, name="go-mod")
    a_snapshot(mount, a_blob(org, "snapshot", 50), 50)
    token, _ = EngineToken.issue(org, label="ci")
    Engine.objects.create(organization=org, engine_id="engine-1", remote_addr="10.0.0.1", last_token=token)


# The positive run checks that every valid call answers a status the schema lists, which
# does not depend on the database: once. The "all" run, whose odd inputs (NUL bytes, huge
# integers) are where a database of its own could answer 500, runs in both passes.
@pytest.mark.parametrize("run_name", [pytest.param("positive", marks=pytest.mark.once), "all"])
def test_every_operation_conforms(live_service, org, cache, django_user_model, tmp_path, run_name):
    maintainer = django_user_model.objects.create_user("maya", password="pw-maya-123")
    Membership.objects.create(organization=org, user=maintainer, role=Role.MAINTAINER)
    value = ApiToken.issue(maintainer)[1]
    config = tmp_path / "schemathesis.toml"
    # Operations on the organization the token's user maintains, so that they reach the
    # handlers rather than stopping at 404.
    config.write_text('[parameters]\n"path.slug" = "acme"\n')
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config), "run",
        f"{live_service.url}/api/v1/schema/", "--url", f"{live_service.url}",
        "-H", f"Authorization: Bearer {value}",
        *RUNS[run_name], "--phases", "examples,coverage,fuzzing", "--max-examples", "25",
        "--seed", "12", "--workers", "1", "--no-color", "--request-timeout", "30",
    ]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"}
    )
    report = run.stdout[-20000:] + run.stderr[-5000:]
    assert run.returncode == 0, report + "\n--- server log ---\n" + live_service.output()[-10000:]
    assert "Tested: 28" in run.stdout, report  # every operation of the schema
    assert " failed" not in run.stdout.split("Test cases:")[1], report


def test_api_tokens_are_refused_by_the_live_engine_endpoints(live_service, org, django_user_model):
    """Through the whole WSGI stack, whose engine token check runs before Django."""
    user = django_user_model.objects.create_user("maya", password="pw-maya-123")
    value = ApiToken.issue(user)[1]
    for headers in ({"Authorization": basic(value)}, {"Authorization": f"Bearer {value}"}):
        answer = requests.get(
            f"{live_service.url}/magicache/config", headers=headers, json={"EngineID": "e1"}, timeout=10
        )
        assert answer.status_code == 401 and answer.json()["error"]
    engine = EngineToken.issue(org)[1]
    answer = requests.get(f"{live_service.url}/api/v1/orgs/", headers={"Authorization": f"Bearer {engine}"}, timeout=10)
    assert answer.status_code == 401 and "engine tokens" in answer.json()["error"]


def test_the_docs_page_and_its_assets_come_from_this_service(transactional_db):
    """As bin/run serves it: collectstatic, then whitenoise."""
    call_command("collectstatic", interactive=False, verbosity=0)
    service = LiveService()
    try:
        page = requests.get(f"{service.url}/api/v1/docs/", timeout=10)
        assert page.status_code == 200
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        scripts = [a for a in assets if a.endswith(".js")]
        # Swagger UI's files, and the page's own start-up script (the CSP allows no inline one).
        assert scripts and all(a.startswith("/static/") or a == "/api/v1/docs/?script=" for a in assets), assets
        assert "/api/v1/docs/?script=" in assets
        for asset in assets:
            answer = requests.get(service.url + asset, timeout=10)
            assert answer.status_code == 200 and answer.content, asset
    finally:
        service.stop()
