"""Evicting build steps: their results leave /import, and the layers nothing else needs go.

    plan_steps(organization, record_ids) -> EvictionPlan       what evicting would do
    plan_results(organization, result_ids) -> EvictionPlan
    evict_steps(organization, record_ids, actor=None) -> Evicted           do it
    evict_results(organization, result_ids, actor=None) -> Evicted
    steps_to_evict(organization, query, expected=None) -> [record ids]   a search's targets

With `actor` (a user, or audit.services.Actor) the eviction is audited: one entry per call.

Evicting a step deletes every result of its record (so it leaves /import at once, and
its pending export, so the next engine that reports it is asked to export it again). The
layers of those results that no other result uses are deleted too, and so are their blobs,
bytes first, unless a live cache mount snapshot holds the same digest. The record and its
place in the graph stay: steps built on it keep their own results.

The dashboard, Django admin and the operator API all evict through here.
"""

import logging
from dataclasses import dataclass, field

from django.db import transaction

from audit import services as audit
from audit.models import Action
from blobs.models import Blob, BlobState
from blobs.services import delete_blob
from blobs.storage import StoreUnavailable
from mounts.services import referenced_digests
from records.models import Layer, PendingExport, Record, Result, ResultLayer
from records.services import batched, mark_changed

log = logging.getLogger("cacheweb.records")


class SearchRefused(ValueError):
    """Evicting by search needs a search: an empty one would take every step."""


class SearchChanged(ValueError):
    """The search matches another number of steps than the operator confirmed."""

    def __init__(self, matched, expected):
        super().__init__(f"the search now matches {matched} steps, not {expected}")
        self.matched = matched
        self.expected = expected

# S3 not answering, or a disk refusing the unlink: the bytes, and so the row, are still
# there, unreferenced now, for the storage lifecycle's next pass.
STORE_FAILURES = (StoreUnavailable, OSError)


@dataclass
class EvictionPlan:
    record_ids: list  # the steps whose results go
    result_ids: list
    layer_ids: list  # layers no other result uses: their rows go
    blobs: dict  # {digest: verified bytes (0 if pending)} deleted with them
    shared_layers: int  # layers of these results that other results still use
    mount_held: int  # unshared layers whose blob a live mount snapshot holds (kept)

    @property
    def freed_bytes(self):
        return sum(self.blobs.values())


@dataclass
class Evicted:
    steps: int
    results: int
    blobs_deleted: dict = field(default_factory=dict)  # {digest: bytes}
    blobs_kept: list = field(default_factory=list)  # the store failed: left for the next pass
    error: str = ""

    @property
    def freed_bytes(self):
        return sum(self.blobs_deleted.values())


def plan_steps(organization, record_ids):
    result_ids = []
    for chunk in batched(sorted(set(record_ids))):
        result_ids += Result.objects.filter(record__organization=organization, record_id__in=chunk).values_list(
            "pk", flat=True
        )
    return _plan(organization, result_ids)


def plan_results(organization, result_ids):
    found = []
    for chunk in batched(sorted(set(result_ids))):
        found += Result.objects.filter(record__organization=organization, pk__in=chunk).values_list("pk", flat=True)
    return _plan(organization, found)


def _plan(organization, result_ids):
    result_ids = sorted(set(result_ids))
    evicted = set(result_ids)
    record_ids = set()
    layer_ids = set()
    for chunk in batched(result_ids):
        record_ids.update(Result.objects.filter(pk__in=chunk).values_list("record_id", flat=True))
        layer_ids.update(ResultLayer.objects.filter(result_id__in=chunk).values_list("layer_id", flat=True))
    shared = set()
    for chunk in batched(sorted(layer_ids)):
        for layer_id, result_id in ResultLayer.objects.filter(layer_id__in=chunk).values_list("layer_id", "result_id"):
            if result_id not in evicted:
                shared.add(layer_id)
    unshared = sorted(layer_ids - shared)
    digests = set()
    for chunk in batched(unshared):
        digests.update(Layer.objects.filter(pk__in=chunk).values_list("digest", flat=True))
    held = set()
    blobs = {}
    for chunk in batched(sorted(digests)):
        held |= referenced_digests(organization, chunk)
        for digest, size, state in Blob.objects.filter(organization=organization, digest__in=chunk).values_list(
            "digest", "size", "state"
        ):
            blobs[digest] = (size or 0) if state == BlobState.VERIFIED else 0
    for digest in held:
        blobs.pop(digest, None)
    return EvictionPlan(
        record_ids=sorted(record_ids),
        result_ids=result_ids,
        layer_ids=unshared,
        blobs=dict(sorted(blobs.items())),
        shared_layers=len(shared),
        mount_held=len(held),
    )


def evict_steps(organization, record_ids, actor=None):
    with transaction.atomic():
        plan = plan_steps(organization, record_ids)
        _drop_results(organization, plan)
    return _audited(organization, plan, _delete_blobs(organization, plan), actor)


def evict_results(organization, result_ids, actor=None):
    with transaction.atomic():
        plan = plan_results(organization, result_ids)
        _drop_results(organization, plan)
    return _audited(organization, plan, _delete_blobs(organization, plan), actor)


def steps_to_evict(organization, query, expected=None):
    """The record ids a step search (records.steps.StepQuery) would evict. With `expected`,
    the count the operator saw in the preview, refuse if the search matches another number
    now: steps exported since then would otherwise go unseen."""
    from records.steps import step_listing

    if not query.filtered:
        raise SearchRefused("search or filter first: evicting every step takes a search")
    record_ids = list(step_listing(organization, query).values_list("record_id", flat=True))
    if expected is not None and expected != len(record_ids):
        raise SearchChanged(len(record_ids), expected)
    return record_ids


def _audited(organization, plan, done, actor):
    if actor is None or not (done.results or done.blobs_deleted):
        return done
    titles = list(
        Record.objects.filter(pk__in=plan.record_ids[: audit.NAMES_KEPT]).values_list("description", "digest")
    )
    audit.record(
        organization, actor, Action.STEPS_EVICTED,
        target=f"{done.steps} step(s), {done.results} result(s), {len(done.blobs_deleted)} blob(s)",
        bytes_freed=done.freed_bytes,
        # Blobs, as every eviction counts: steps and blobs in one counter would mix units.
        evicted=len(done.blobs_deleted),
        details={
            "records": plan.record_ids[: audit.NAMES_KEPT],
            "steps": [description or digest for description, digest in titles],
            "blobs": audit.names(done.blobs_deleted),
            "blobs_kept": len(done.blobs_kept),
        },
    )
    return done


def _drop_results(organization, plan):
    """The graph's side, in one transaction: results and unshared layers go, records
    without a complete result are asked for again."""
    if not plan.result_ids:
        return
    for chunk in batched(plan.result_ids):
        ResultLayer.objects.filter(result_id__in=chunk).delete()
        Result.objects.filter(pk__in=chunk).delete()
    for chunk in batched(plan.layer_ids):
        # A layer a concurrent /layers linked meanwhile keeps its row.
        Layer.objects.filter(pk__in=chunk, organization=organization).exclude(
            pk__in=ResultLayer.objects.filter(layer_id__in=chunk).values("layer_id")
        ).delete()
    still = set()
    for chunk in batched(plan.record_ids):
        still.update(Result.objects.filter(record_id__in=chunk, complete=True).values_list("record_id", flat=True))
    gone = sorted(set(plan.record_ids) - still)
    for chunk in batched(gone):
        Record.objects.filter(pk__in=chunk).update(has_result=False)
        # Not waiting for EXPORT_RETRY_AFTER: the next engine reporting it exports it.
        PendingExport.objects.filter(record_id__in=chunk).delete()
    mark_changed(organization)


def _delete_blobs(organization, plan):
    """The blobs, after the graph no longer names them: bytes first, then the row."""
    done = Evicted(steps=len(plan.record_ids), results=len(plan.result_ids))
    digests = list(plan.blobs)
    for position, digest in enumerate(digests):
        try:
            freed = delete_blob(organization, digest)
        except STORE_FAILURES as exc:
            done.blobs_kept = digests[position:]
            done.error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "step eviction org=%s: the store failed, %d blobs kept for the next pass: %s",
                organization.slug, len(done.blobs_kept), exc,
            )
            break
        done.blobs_deleted[digest] = freed
    log.info(
        "steps evicted org=%s steps=%d results=%d blobs=%d bytes=%d",
        organization.slug, done.steps, done.results, len(done.blobs_deleted), done.freed_bytes,
    )
    return done
