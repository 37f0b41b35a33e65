"""HMAC signatures for the built-in storage's blob URLs.

A URL is good for one organization, one digest, one method (GET, which also allows
HEAD, or PUT), until its expiry, and for PUT optionally one announced size. The key is
derived from SECRET_KEY with a salt of its own, so a leaked URL signature says nothing
about sessions or other signed values. URLs signed with a key listed in
SECRET_KEY_FALLBACKS stay valid until they expire, so a key can be rotated without
failing the transfers engines are in the middle of.
"""

import re
import time

from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

SALT = "cacheweb.blobs.url.v1"
DOWNLOAD = "GET"
UPLOAD = "PUT"


class SignatureError(Exception):
    """The URL is not valid for this request; the message says why (safe to show)."""


def _message(org_id, digest, method, expires, size):
    return f"{org_id}\n{digest}\n{method}\n{expires}\n{'' if size is None else size}"


def sign(org_id, digest, method, expires, size=None, secret=None):
    message = _message(org_id, digest, method, expires, size)
    return salted_hmac(SALT, message, secret=secret, algorithm="sha256").hexdigest()


def signed_query(org_id, digest, method, lifetime, size=None, now=None):
    """Query parameters (a dict) that make a URL for this blob and method valid for
    `lifetime` seconds."""
    expires = int((now if now is not None else time.time()) + lifetime)
    query = {"expires": str(expires)}
    if size is not None:
        query["size"] = str(size)
    query["sig"] = sign(org_id, digest, method, expires, size)
    return query


# str.isdigit() accepts digits that int() refuses ("²"): ASCII only.
NUMBER = re.compile(r"[0-9]{1,20}")


def verify(org_id, digest, method, query, now=None):
    """Check a request's query against its org, digest and method. Returns the bound
    size (or None when the URL binds none). Raises SignatureError."""
    signature = query.get("sig", "")
    raw_expires = query.get("expires", "")
    raw_size = query.get("size")
    if not signature or not NUMBER.fullmatch(raw_expires):
        raise SignatureError("blob URL is not signed")
    if raw_size is not None and not NUMBER.fullmatch(raw_size):
        raise SignatureError("blob URL has a malformed size")
    expires = int(raw_expires)
    size = int(raw_size) if raw_size is not None else None
    # HEAD reads what GET reads; a download URL serves both.
    signed_method = DOWNLOAD if method in ("GET", "HEAD") else method
    keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    if not any(
        constant_time_compare(sign(org_id, digest, signed_method, expires, size, secret=key), signature)
        for key in keys
    ):
        raise SignatureError("blob URL signature does not match this organization, digest and method")
    if (now if now is not None else time.time()) > expires:
        raise SignatureError("blob URL has expired")
    return size
