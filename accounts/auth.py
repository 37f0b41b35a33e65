"""Engine authentication: HTTP Basic with the token as user name and an empty password."""

import base64

from rest_framework import authentication, exceptions

from accounts.models import EngineToken


class EngineTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            raise exceptions.NotAuthenticated("engine token required (HTTP Basic, token as user name)")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            raise exceptions.AuthenticationFailed("use HTTP Basic auth with the token as user name")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except ValueError:  # bad base64, non-ASCII input or bytes that are not UTF-8
            raise exceptions.AuthenticationFailed("malformed Basic credentials") from None
        token_value, sep, password = decoded.partition(":")
        if not sep or password:
            raise exceptions.AuthenticationFailed("Basic credentials must be '<token>:' (empty password)")
        token = EngineToken.objects.find(token_value)
        if token is None:
            raise exceptions.AuthenticationFailed("unknown or revoked engine token")
        token.touch()
        return (None, token)

    def authenticate_header(self, request):
        return 'Basic realm="cacheweb"'
