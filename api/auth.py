"""How operators authenticate to /api/v1/: a personal API token as a Bearer token, or the
dashboard's session (with CSRF on writes, as DRF's SessionAuthentication checks)."""

from rest_framework import authentication, exceptions

from accounts.models import TOKEN_PREFIX as ENGINE_TOKEN_PREFIX
from api.models import ApiToken


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None  # the session may still authenticate
        scheme, _, value = header.partition(" ")
        if scheme.lower() != self.keyword:
            raise exceptions.AuthenticationFailed("use 'Authorization: Bearer <API token>'")
        value = value.strip()
        if value.startswith(ENGINE_TOKEN_PREFIX):
            raise exceptions.AuthenticationFailed("engine tokens do not work here; create an API token (cwu_...)")
        token = ApiToken.objects.matching(value)
        if token is None:
            raise exceptions.AuthenticationFailed("unknown API token")
        if token.revoked:
            raise exceptions.AuthenticationFailed("this API token was revoked")
        if token.expired():
            raise exceptions.AuthenticationFailed("this API token has expired")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("this API token's user is inactive")
        token.touch()
        return (token.user, token)

    def authenticate_header(self, request):
        return 'Bearer realm="cacheweb"'
