"""Blob endpoints: the two engine calls under /magicache, and the built-in data plane."""

import logging
import time
from functools import partial

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions

from blobs import services, signing
from blobs.body import open_body
from blobs.ranges import blob_response
from blobs.storage import UploadRejected
from activity import recording
from activity.models import Signal
from cacheweb.engine_api import EngineAPIView, ok

log = logging.getLogger("cacheweb.blobs")


def _digest(body):
    try:
        return services.validate_digest(body.get("Digest"))
    except services.InvalidDigest as exc:
        raise exceptions.ValidationError({"Digest": [str(exc)]}) from None


class LayerUploadURLView(EngineAPIView):
    endpoint = "layerUploadURL"
    writes = True

    def get(self, request):
        digest = _digest(self.body(request))
        answer, held_size = services.upload_decision(request, self.org, digest)
        if answer["Skip"]:
            self.count(Signal.UPLOAD_SKIPS)
            self.count(Signal.UPLOAD_SKIPPED_BYTES, held_size or 0)
        return ok(answer)


class LayerDownloadURLView(EngineAPIView):
    endpoint = "layerDownloadURL"

    def get(self, request):
        digest = _digest(self.body(request))
        try:
            url = services.download_url(request, self.org, digest)
        except services.BlobNotFound:
            raise exceptions.NotFound(f"this organization holds no blob {digest}") from None
        self.count(Signal.DOWNLOAD_URLS)
        return ok({"URL": url})


def _error(status, message):
    return JsonResponse({"error": message}, status=status)


@csrf_exempt
def blob_data(request, org_id, digest):
    """GET/HEAD/PUT of a blob on the built-in storage, authorized by the URL's signature
    alone (engines send no token here)."""
    if request.method not in ("GET", "HEAD", "PUT"):
        response = _error(405, "blob URLs take GET, HEAD or PUT")
        response["Allow"] = "GET, HEAD, PUT"
        return response
    try:
        services.validate_digest(digest)
        bound_size = signing.verify(org_id, digest, request.method, request.GET)
    except (services.InvalidDigest, signing.SignatureError) as exc:
        log.warning("blob %s org=%s digest=%s refused: %s", request.method, org_id, digest[:80], exc)
        return _error(403, str(exc))
    if request.method == "PUT":
        return _put(request, org_id, digest, bound_size)
    try:
        file, size = services.open_builtin_blob(org_id, digest)
    except services.BlobNotFound as exc:
        return _error(404, str(exc))
    return blob_response(
        file,
        size,
        request.headers.get("Range"),
        request.method,
        f'"{digest}"',
        request.headers.get("If-Range"),
        on_sent=partial(_count_served, int(org_id)),
    )


def _count_served(organization_id, sent):
    # Signed URLs name no engine: served bytes count for the organization only.
    if sent:
        recording.record(organization_id, {Signal.SERVED_BYTES: sent})


def _put(request, org_id, digest, bound_size):
    raw_length = request.META.get("CONTENT_LENGTH") or ""
    if raw_length and not raw_length.isdigit():
        return _error(400, "malformed Content-Length")
    length = int(raw_length) if raw_length else None
    started = time.monotonic()
    try:
        with open_body(request, length or 0) as body:
            blob = services.receive_upload(org_id, digest, body, length, bound_size)
    except UploadRejected as exc:
        log.warning("blob PUT org=%s digest=%s refused status=%s: %s", org_id, digest, exc.status, exc.message)
        return _error(exc.status, exc.message)
    elapsed = time.monotonic() - started
    log.info(
        "blob PUT org=%s digest=%s size=%s duration_ms=%.1f read=%s",
        org_id, digest, blob.size, elapsed * 1000, body.kind,
    )
    return JsonResponse({"Digest": blob.digest, "Size": blob.size}, status=200)
