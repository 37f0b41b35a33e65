"""The engine endpoints of the cache graph: /records, /layers and /import."""

import gzip
import logging

from django.http import HttpResponse
from rest_framework import exceptions

from activity.models import Signal
from cacheweb.engine_api import EngineAPIView, ok, require_body_object
from cacheweb.parsers import FastJSONParser, decode_json, read_body
from records import exportstate, importconfig, services
from records.graph import PayloadError

log = logging.getLogger("cacheweb.records")

DRAIN_CHUNK = 1024 * 1024


class RawJSONParser(FastJSONParser):
    """The JSON body as its bytes, read under the same limit: /records first compares
    them with the engine's last post (records.exportstate) and decodes only a new one."""

    def parse(self, stream, media_type=None, parser_context=None):
        return read_body(stream, parser_context)


def _decode(raw):
    """What FastJSONParser and EngineAPIView.body make of the bytes, with their errors."""
    data = decode_json(raw)
    return require_body_object(data)


class RecordsView(EngineAPIView):
    endpoint = "records"
    parser_classes = [RawJSONParser]

    def post(self, request):
        # Read-only tokens may not export; the engine only needs an empty answer, so the
        # body is not parsed, only read off the connection (left there, it would be taken
        # for the next request on a keep-alive connection).
        if request.auth.read_only:
            stream = request.stream
            while stream is not None and stream.read(DRAIN_CHUNK):
                pass
            self.count(Signal.RECORDS_POSTS)  # its keys are not read, so not counted
            return ok({"ExportRecords": []})
        engine_ref = self.engine.pk if self.engine else None
        raw = request.data
        if isinstance(raw, bytes):
            digest = exportstate.fingerprint(raw)
            answer = services.recall_records(self.org, request.auth, digest, engine_ref=engine_ref)
        else:  # no body at all: DRF hands over an empty object
            digest, answer = None, None
        if answer is None:
            with services.gc_paused():
                body = _decode(raw) if digest is not None else self.body(request)
                del raw
                try:
                    answer = services.update_records(
                        self.org, request.auth, body, engine_ref=engine_ref, digest=digest
                    )
                except PayloadError as exc:
                    raise exceptions.ParseError(str(exc)) from None
        export, graph, shared = answer
        log.info(
            "records org=%s %s export=%s",
            self.org.slug,
            " ".join(f"{k}={v}" for k, v in graph.stats().items()),
            len(export),
        )
        self.count(Signal.RECORDS_POSTS)
        self.count(Signal.KEYS_REPORTED, graph.key_count)
        self.count(Signal.EXPORTS_ASKED, len(export))
        self.count(Signal.SHARED_STEPS, shared)
        return ok({"ExportRecords": export})


class LayersView(EngineAPIView):
    endpoint = "layers"
    writes = True

    def post(self, request):
        try:
            answer, refusals = services.update_layers(
                self.org, request.auth, self.body(request), engine_ref=self.engine.pk if self.engine else None
            )
        except services.LayersError as exc:
            raise exceptions.ParseError(str(exc)) from None
        log.info(
            "layers org=%s accepted=%s refused=%s",
            self.org.slug,
            len(answer["Accepted"]),
            len(answer["Refused"]),
        )
        self.count(Signal.EXPORTS_DELIVERED, len(answer["Accepted"]))
        for kind, n in refusals.items():
            self.count(Signal.EXPORTS_REFUSED, n, kind)
        return ok(answer)


def _accepts_gzip(request):
    for part in request.META.get("HTTP_ACCEPT_ENCODING", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*") and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return True
    return False


class ImportView(EngineAPIView):
    endpoint = "import"

    def get(self, request):
        body, etag = importconfig.current(self.org)
        if etag and etag in request.META.get("HTTP_IF_NONE_MATCH", ""):
            response = HttpResponse(status=304)
        elif _accepts_gzip(request):
            response = HttpResponse(body, content_type="application/json")
            response["Content-Encoding"] = "gzip"
        else:
            response = HttpResponse(gzip.decompress(body), content_type="application/json")
        self.count(Signal.IMPORTS, 1, "unchanged" if response.status_code == 304 else "")
        response["ETag"] = etag
        response["Vary"] = "Accept-Encoding"
        response["Cache-Control"] = "private, no-cache"
        return response
