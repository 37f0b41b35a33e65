"""The OpenAPI schema of /api/v1/ (drf-spectacular): the operator API only, never the
engine protocol, and the Bearer API token as its security scheme."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension

API_PREFIX = "/api/v1/"


def only_operator_api(endpoints, **kwargs):
    return [endpoint for endpoint in endpoints if endpoint[0].startswith(API_PREFIX)]


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.auth.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "a personal API token (cwu_...): /profile/tokens/ or manage.py createapitoken",
        }
