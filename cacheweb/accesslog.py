"""gunicorn's access log without secrets: the Basic-auth user field is an engine token and
blob URLs carry signatures in their query string. Each is cut to a prefix that says which
one it was (as EngineToken.prefix does), never enough to use it."""

import re

from gunicorn.glogging import Logger

SIGNATURE_KEPT = 6
# Query parameters that are credentials: the built-in blob URL's `sig`, and S3's.
SECRET_PARAMETERS = {"sig", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "signature", "token"}
SECRET_HEADERS = {"authorization", "cookie", "proxy-authorization", "x-amz-security-token"}
_HEADER_ATOM = re.compile(r"^\{(.+)\}([ieo])$")


def token_kept():
    # Imported late: gunicorn loads this class before Django is set up. The lookup part
    # of a token is stored in the clear and shown on the dashboard.
    from accounts.models import LOOKUP_LENGTH, TOKEN_PREFIX

    return len(TOKEN_PREFIX) + LOOKUP_LENGTH


def redact_value(value, kept=None):
    """`value` cut to at most `kept` characters (and at most half of it), then '…'."""
    if not value or value == "-":
        return value
    kept = token_kept() if kept is None else kept
    return value[: min(kept, len(value) // 2)] + "…"


_SECRET_PARAMETER = re.compile(r"(?i)(^|[&;])(" + "|".join(map(re.escape, SECRET_PARAMETERS)) + r")=([^&;]*)")


def redact_query(query):
    """The raw query string with the value of each credential parameter cut short."""
    if not query:
        return query
    return _SECRET_PARAMETER.sub(lambda m: f"{m[1]}{m[2]}={redact_value(m[3], SIGNATURE_KEPT)}", query)


def redact_uri(uri):
    path, mark, query = uri.partition("?")
    return f"{path}{mark}{redact_query(query)}" if mark else uri


class RedactingLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["u"] = redact_value(atoms["u"])
        atoms["q"] = redact_query(atoms["q"])
        atoms["r"] = f"{environ['REQUEST_METHOD']} {redact_uri(environ['RAW_URI'])} {environ['SERVER_PROTOCOL']}"
        atoms["f"] = redact_uri(atoms["f"])
        for key, value in atoms.items():
            match = _HEADER_ATOM.match(key)
            if not match or not isinstance(value, str):
                continue
            name = match.group(1).removeprefix("http_").replace("_", "-")
            if name in SECRET_HEADERS:
                atoms[key] = value.split(" ", 1)[0] + " …" if " " in value else "…"
            elif name in ("raw-uri", "referer", "query-string"):
                atoms[key] = redact_uri(value) if name != "query-string" else redact_query(value)
        return atoms
