"""Engine authentication: HTTP Basic with the token as user name and an empty password."""

import base64

from rest_framework import authentication, exceptions

from accounts.models import EngineToken

# cacheweb.early checks the token before the body is read and leaves it here.
ENVIRON_KEY = "cacheweb.engine_token"


class TokenRefused(Exception):
    def __init__(self, message, missing=False):
        super().__init__(message)
        self.message = message
        self.missing = missing


def resolve_token(header):
    """The active EngineToken named by an Authorization header; TokenRefused if none."""
    if not header:
        raise TokenRefused("engine token required (HTTP Basic, token as user name)", missing=True)
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise TokenRefused("use HTTP Basic auth with the token as user name")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except ValueError:  # bad base64, non-ASCII input or bytes that are not UTF-8
        raise TokenRefused("malformed Basic credentials") from None
    token_value, sep, password = decoded.partition(":")
    if not sep or password:
        raise TokenRefused("Basic credentials must be '<token>:' (empty password)")
    token = EngineToken.objects.find(token_value)
    if token is None:
        raise TokenRefused("unknown or revoked engine token")
    return token


class EngineTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        token = request.META.get(ENVIRON_KEY)
        if token is None:
            try:
                token = resolve_token(request.META.get("HTTP_AUTHORIZATION", ""))
            except TokenRefused as exc:
                if exc.missing:
                    raise exceptions.NotAuthenticated(exc.message) from None
                raise exceptions.AuthenticationFailed(exc.message) from None
        token.touch()
        return (None, token)

    def authenticate_header(self, request):
        return 'Basic realm="cacheweb"'
