"""What a layer contains, indexed in the background the first time someone asks.

The same bounded streaming index as cache mount snapshots (blobs.contents), plus a
listing of the layer's first LAYER_LISTING_MAX entries for searching by path.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from blobs import contents
from cacheweb import outbox
from records.models import ContentsState, Layer, LayerContents

log = logging.getLogger("cacheweb.records")

LISTING_PAGE = 200


def request_index(layer):
    """The layer's contents row; a new one (pending) queues the index once the request
    commits. A pending index older than the index's own time bound is queued again (its
    worker died or the task was lost)."""
    row = LayerContents.objects.filter(layer=layer).defer("listing").first()
    stale = timezone.now() - timedelta(seconds=settings.CONTENTS_INDEX_MAX_SECONDS * 2 + 60)
    if row is not None:
        if row.state == ContentsState.PENDING and row.requested_at < stale:
            LayerContents.objects.filter(pk=row.pk).update(requested_at=timezone.now())
            _queue(layer.pk)
        return row
    try:
        with transaction.atomic():
            row = LayerContents.objects.create(layer=layer)
    except IntegrityError:
        # Another request asked first: its task is queued.
        return LayerContents.objects.filter(layer=layer).defer("listing").first()
    _queue(layer.pk)
    return row


def _queue(layer_id):
    from records import tasks

    outbox.enqueue(tasks.index_layer_contents, [layer_id])


def index_layer(layer_id):
    """Read the layer's blob and store what is inside. Returns the row, or None when the
    layer is gone."""
    layer = Layer.objects.select_related("organization").filter(pk=layer_id).first()
    if layer is None:
        return None
    try:
        summary = contents.index_blob(layer.organization, layer.digest, listing_limit=settings.LAYER_LISTING_MAX)
    except contents.BlobMissing:
        log.warning("layer %s: blob %s is not stored, not indexed", layer.pk, layer.digest)
        fields = {"state": ContentsState.MISSING, "indexed_at": timezone.now()}
    else:
        listing = summary.listing
        summary.listing = []
        fields = {
            "state": ContentsState(summary.status),
            "summary": summary.as_dict() | {"listing_truncated": summary.listing_truncated},
            "listing": listing,
            "file_count": summary.files,
            "uncompressed_bytes": summary.total_bytes,
            "indexed_at": timezone.now(),
        }
    row, _ = LayerContents.objects.update_or_create(layer=layer, defaults=fields)
    return row


def search_listing(row, text="", page=1):
    """(entries of the layer's listing whose path contains `text`, any case, on page
    `page` of LISTING_PAGE; how many matched; number of pages)."""
    entries = (row.listing or []) if row is not None else []
    text = text.lower()
    matched = [entry for entry in entries if text in entry[0].lower()] if text else entries
    pages = max(1, -(-len(matched) // LISTING_PAGE))
    page = min(max(page, 1), pages)
    return matched[(page - 1) * LISTING_PAGE : page * LISTING_PAGE], len(matched), pages
