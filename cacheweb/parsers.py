"""Request parsing for the engine API (kept apart from views: DRF imports it at settings load)."""

import orjson
from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import BaseParser


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request body too large"
    default_code = "too_large"


class FastJSONParser(BaseParser):
    """JSON with orjson: export bodies are tens of megabytes."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        return decode_json(read_body(stream, parser_context))


def read_body(stream, parser_context):
    """The request body's bytes, refused (413) past CACHEWEB_MAX_ENGINE_BODY."""
    request = parser_context["request"] if parser_context else None
    limit = settings.MAX_ENGINE_BODY
    if request is not None:
        length = request.META.get("CONTENT_LENGTH")
        if length and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    raw = stream.read(limit + 1) if stream is not None else b""
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    return raw


def decode_json(raw):
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise exceptions.ParseError(f"malformed JSON: {exc}") from None
