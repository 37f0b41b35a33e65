"""The OpenAPI 3 schema and its docs page, served by the service itself."""

import pytest
from django.contrib.staticfiles import finders
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db

PATHS = [
    "/api/v1/orgs/",
    "/api/v1/orgs/{slug}/",
    "/api/v1/orgs/{slug}/steps/",
    "/api/v1/orgs/{slug}/steps/{id}/",
    "/api/v1/orgs/{slug}/steps/evict/",
    "/api/v1/orgs/{slug}/blobs/",
    "/api/v1/orgs/{slug}/blobs/{digest}/",
    "/api/v1/orgs/{slug}/engine-tokens/",
    "/api/v1/orgs/{slug}/engine-tokens/{id}/",
    "/api/v1/orgs/{slug}/mounts/",
    "/api/v1/orgs/{slug}/mounts/{id}/",
    "/api/v1/orgs/{slug}/mounts/{id}/evict/",
    "/api/v1/orgs/{slug}/mount-policy/",
    "/api/v1/orgs/{slug}/engines/",
    "/api/v1/orgs/{slug}/engines/{id}/",
    "/api/v1/orgs/{slug}/activity/",
    "/api/v1/orgs/{slug}/lifecycle/preview/",
    "/api/v1/orgs/{slug}/lifecycle/run/",
    "/api/v1/orgs/{slug}/lifecycle/passes/",
    "/api/v1/orgs/{slug}/storage-policy/",
    "/api/v1/orgs/{slug}/audit/",
]


@pytest.fixture
def schema(client):
    answer = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert answer.status_code == 200
    return answer.json()


def test_schema_is_valid_openapi_3_with_every_path(schema):
    assert schema["openapi"].startswith("3.")
    validate(schema)
    assert sorted(schema["paths"]) == sorted(PATHS)
    assert set(schema["paths"]["/api/v1/orgs/{slug}/steps/{id}/"]) == {"get", "delete"}
    assert "post" in schema["paths"]["/api/v1/orgs/{slug}/steps/evict/"]


def test_schema_leaves_the_engine_protocol_out(schema):
    assert not [path for path in schema["paths"] if "magicache" in path]


def test_schema_describes_the_bearer_token_and_the_step_search(schema):
    scheme = schema["components"]["securitySchemes"]["apiToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    # Every operation takes the token (or the session).
    for operations in schema["paths"].values():
        for operation in operations.values():
            assert {"apiToken": []} in operation["security"]
    names = {p["name"] for p in schema["paths"]["/api/v1/orgs/{slug}/steps/"]["get"]["parameters"]}
    assert {"q", "description", "digest", "engine", "min_age_days", "max_age_days", "used", "layer", "sort",
            "page", "page_size"} <= names
    page = schema["components"]["schemas"]["PagedStep"]
    assert {"count", "next", "previous", "results"} <= set(page["properties"])


def test_docs_page_uses_local_assets_only(client):
    answer = client.get("/api/v1/docs/")
    assert answer.status_code == 200
    html = answer.content.decode()
    assert "swagger-ui" in html and "<script>" not in html  # no inline script: the CSP allows none
    assert '<script src="/api/v1/docs/?script="></script>' in html
    script = client.get("/api/v1/docs/?script=").content.decode()
    assert "/api/v1/schema/" in script
    for text in (html, script):
        assert "cdn" not in text.lower() and "https://" not in text
    # The Swagger UI files come from drf-spectacular-sidecar, found by staticfiles.
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")


def test_schema_as_json_or_yaml_by_format(client):
    as_json = client.get("/api/v1/schema/", {"format": "json"})
    assert as_json.status_code == 200 and as_json.json()["openapi"].startswith("3.")
    as_yaml = client.get("/api/v1/schema/")
    assert as_yaml.status_code == 200 and as_yaml.content.startswith(b"openapi: 3.")


def test_schema_describes_the_settings_engines_and_lifecycle(schema):
    paths = schema["paths"]
    org = paths["/api/v1/orgs/{slug}/"]
    assert set(org) >= {"get", "patch"}
    settings = org["patch"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    fields = schema["components"]["schemas"][settings]["properties"]
    assert set(fields) == {"name", "import_period", "export_period", "export_timeout"}
    assert fields["import_period"]["minimum"] == 1
    sorts = {p["name"]: p for p in paths["/api/v1/orgs/{slug}/engines/"]["get"]["parameters"]}["sort"]
    assert "-last_seen" in sorts["schema"]["enum"] and "engine_id" in sorts["schema"]["enum"]
    limit = {p["name"]: p for p in paths["/api/v1/orgs/{slug}/lifecycle/preview/"]["get"]["parameters"]}["limit"]
    assert limit["schema"] == {"type": "integer", "minimum": 0, "maximum": 500}
    run = paths["/api/v1/orgs/{slug}/lifecycle/run/"]
    assert set(run) == {"post"} and "503" in run["post"]["responses"]
