"""What the engine endpoints do to an organization's cache graph.

Every function takes an organization and plain data, does its work in bulk queries and
returns plain data; the views only parse, authorize and respond.
"""

import gc
import hashlib
import logging
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max
from django.utils import timezone

from accounts.models import Engine
from blobs.models import Blob, BlobState
from blobs.services import verified_blob_sizes
from cacheweb import outbox
from records import bulk, exportmemo, exportstate, keydiff, rowmemo
from records import graph as graphlib
from records.digests import is_digest, parse_time
from records.models import ImportSnapshot, Layer, PendingExport, Record, Result, ResultLayer

log = logging.getLogger("cacheweb.records")

DIFF_ID_ANNOTATION = "containerd.io/uncompressed"
# A layer's last_used_at is rewritten only when older than this: retention counts unused
# time in days, and an hour's precision spares the hot rows a write per export.
LAST_USED_PRECISION = timedelta(hours=1)
CREATED_AT_ANNOTATION = "buildkit/createdat"


def query_batch():
    """How many values one IN (...) may carry on this database (SQLite caps variables)."""
    limit = connection.features.max_query_params
    return 5000 if limit is None else max(1, min(5000, limit - 50))


def batched(values, size=None):
    values = list(values)
    size = size or query_batch()
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _records_by_identity(organization, identities, fields=("identity", "id", "has_result")):
    """{identity: row tuple} for those of `identities` stored for this organization."""
    found = {}
    for chunk in batched(identities):
        rows = Record.objects.filter(organization=organization, identity__in=chunk).values_list(*fields)
        for row in rows:
            found[row[0]] = row[1:]
    return found


@contextmanager
def gc_paused():
    """Parsing a /records body allocates a few million objects and no cycles; the cyclic
    collector would otherwise rescan them again and again (a third of the time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ---- /records ---------------------------------------------------------------------------


def recall_records(organization, token, digest, now=None, engine_ref=None):
    """Answer an engine's post whose body (fingerprint `digest`, see exportstate) is its
    last one, with no result changed in the organization since: the same as
    update_records would, without parsing or analysing it again. None when that does
    not hold and the body must go through update_records."""
    remembered = exportstate.recall(organization, token, engine_ref, digest)
    if remembered is None:
        return None
    now = now or timezone.now()
    if remembered.dropped:
        _log_dropped(organization, remembered)
    with transaction.atomic():
        export = _ask_for_exports(organization, token, remembered, remembered.rows, now)
    return export, remembered, remembered.shared


def _log_dropped(organization, graph):
    log.warning(
        "records org=%s dropped keys: %s",
        organization.slug,
        ", ".join(f"{reason}={n}" for reason, n in sorted(graph.dropped.items())),
    )


def update_records(organization, token, body, now=None, engine_ref=None, digest=None):
    """Store an engine's key graph and say which results to export.

    Returns (ExportRecords entries, Graph, shared steps: how many of the keys it reported
    with a result were not asked for because another engine had exported them; see
    shared_steps; `engine_ref` is the reporting engine's pk when known). Raises graph.PayloadError for a body that is
    not a /records payload; graph defects only drop the keys concerned. `body` (the
    decoded JSON object) is emptied once parsed, to free its memory early. With the
    body's fingerprint `digest`, what the analysis derived is kept for recall_records,
    and the analysis covers only what changed since the engine's previous post
    (records.keydiff, records.exportmemo).
    """
    now = now or timezone.now()
    # Read before any row is: a result changing after it sends the next post through
    # the analysis again (exportstate.recall).
    generation_seen = exportstate.generation(organization)
    token_id = token.pk if token is not None else None
    index = keydiff.index(body) if digest is not None and exportmemo.enabled() else None
    previous = exportmemo.load(organization.pk, token_id, engine_ref) if index is not None else None
    same_body = previous is not None and previous.digest == digest
    graph = keydiff.analyse_changes(body, index, previous, same_body) if previous is not None else None
    memo = None
    if graph is None:
        same_body = False
        payload = graphlib.parse_payload(body)
        if index is not None:
            # Encoded once the body passed, before its memory is freed for the analysis.
            memo = exportmemo.encode(index)
            index = None
        # The decoded JSON is several times the size of the body; nothing needs it any more.
        body.clear()
        graph = graphlib.analyse(payload)
        del payload
    else:
        body.clear()
    if graph.dropped:
        _log_dropped(organization, graph)
    try:
        rows, export = _store_and_ask(organization, token, graph, now, generation_seen)
    except _RecordGone:
        # A record kept from the previous post is not in the database (restored from a
        # backup older than the memo): analyse this body in full after all.
        graph = graphlib.analyse(graphlib.parse_payload(index.body()))
        same_body = False
        rows, export = _store_and_ask(organization, token, graph, now, generation_seen)
    shared = shared_steps(token, engine_ref, [rows[identity][0] for identity in graph.results if rows[identity][1]])
    if digest is not None:
        exportstate.remember(token, engine_ref, digest, generation_seen, graph, rows, shared)
    if not same_body and (memo is not None or index is not None):
        memo = memo if memo is not None else exportmemo.encode(index)
        exportmemo.save(organization.pk, token_id, engine_ref, digest, memo, graph)
    return export, graph, shared


class _RecordGone(Exception):
    """A record the analysis did not derive again (records.keydiff) is not stored."""


def _store_and_ask(organization, token, graph, now, generation_seen):
    with transaction.atomic():
        rows = _store_records(organization, graph, now, generation_seen)
        export = _ask_for_exports(organization, token, graph, rows, now)
        transaction.on_commit(lambda: rowmemo.remember(organization.pk, generation_seen, rows))
    return rows, export


def shared_steps(token, engine_ref, record_ids):
    """Of `record_ids` (stored with a result), how many have a complete result exported
    by another engine than the one reporting them: work it reused rather than did. Who
    exported is itself a guess (Result.engine); where either side's engine is unknown,
    a result exported with another token counts as another engine's."""
    if not record_ids:
        return 0
    return bulk.results_exported_by_others(record_ids, engine_ref, token.pk if token is not None else None)


def _store_records(organization, graph, now, generation):
    """Insert the records and inputs not stored yet; {identity: (id, has_result)} for all.
    Rows this process mapped at the same `generation` are not looked up again (rowmemo)."""
    rows, unknown = rowmemo.known(organization.pk, generation, graph.records)
    if unknown:
        rows.update(bulk.records_by_identity(organization.pk, unknown))
    # Sorted: engines posting the same new graph at once then insert in the same order,
    # and one waits for the other instead of deadlocking.
    missing = sorted(identity for identity in unknown if identity not in rows)
    if not missing:
        return rows
    if any(graph.records[identity] is None for identity in missing):
        raise _RecordGone()
    inserted = bulk.insert_records(
        organization.pk,
        [
            (
                identity,
                graph.records[identity][0],
                len(graph.records[identity][1]),
                graph.descriptions.get(identity, ""),
            )
            for identity in missing
        ],
        now,
    )
    rows.update(inserted)
    # Stored by a concurrent engine in the meantime, or inserted where the database does
    # not say which ids it gave (SQLite).
    unreturned = [identity for identity in missing if identity not in rows]
    if unreturned:
        rows.update(bulk.records_by_identity(organization.pk, unreturned))
    # Inputs are part of a record's identity, so a record stored before has its inputs:
    # only new records need theirs (a concurrent twin is skipped by the unique constraint).
    bulk.insert_inputs(
        organization.pk,
        sorted(
            (rows[identity][0], index, selector, rows[source][0])
            for identity in missing
            for index, alternatives in enumerate(graph.records[identity][1])
            for selector, source in alternatives
        ),
    )
    return rows


def export_retry_after(organization):
    """Seconds a record asked for and not delivered is withheld from every engine.

    The engine calls /layers only when every push of its export succeeded: one failed
    PUT and nothing of that round is reported. Its export is over, one way or the other,
    within the organization's export timeout of the /records call that started it, so
    that is how long other engines wait before being asked (CACHEWEB_EXPORT_RETRY_AFTER
    can lengthen it, never shorten it). The engine that was asked is asked again at its
    next export already (see _ask_for_exports)."""
    return max(organization.export_timeout, settings.EXPORT_RETRY_AFTER)


def _asked_again_sooner(organization, graph, wanted, asked):
    """Of the records still waiting for an engine's export, those to ask for again now.

    An engine's worker ref ids are its own (random per engine), so the same ref id in
    /records again is the engine that was asked; its exports run one after the other, so
    the export it was asked in is over without having delivered. If blobs arrived since
    it was asked, that export was pushing (the ref was there to push, not pruned and
    silently skipped) and a push failed: ask it again at once. (Blobs of the
    organization: the service does not know which engine pushed which blob, so in a
    busy organization this reads "pushing" generously.) Without blobs, the same engine
    waits like any other. Another engine waits export_retry_after, so no two engines
    export the record at the same time."""
    same_engine = [rid for rid, ref_id in asked.items() if ref_id == graph.results[wanted[rid]].ref_id]
    if not same_engine:
        return set()
    latest = Blob.objects.filter(organization=organization, state=BlobState.VERIFIED).aggregate(
        latest=Max("verified_at")
    )["latest"]
    if latest is None:
        return set()
    sooner = set()
    for start in range(0, len(same_engine), 500):
        sooner.update(
            PendingExport.objects.filter(record_id__in=same_engine[start : start + 500], asked_at__lt=latest)
            .values_list("record_id", flat=True)
        )
    return sooner


def _ask_for_exports(organization, token, graph, rows, now):
    wanted = {rows[identity][0]: identity for identity in graph.results if not rows[identity][1]}
    if not wanted:
        return []
    # Asked within the window: an engine may still be exporting it, so no other engine
    # is asked for it at the same time. Past it that export is over: had it succeeded,
    # /layers would have delivered the record.
    recent = now - timedelta(seconds=export_retry_after(organization))
    asked = bulk.asked_since(wanted, recent)
    waiting = set(asked) - _asked_again_sooner(organization, graph, wanted, asked)
    # Newest results first: recent work is the likeliest to be wanted again.
    chosen = sorted(
        (record_id for record_id in wanted if record_id not in waiting),
        key=lambda record_id: (graph.results[wanted[record_id]].created_at, wanted[record_id]),
        reverse=True,
    )[: settings.EXPORT_RECORDS_MAX]
    if not chosen:
        return []
    PendingExport.objects.bulk_create(
        [
            PendingExport(
                record_id=record_id,
                cache_ref_id=graph.results[wanted[record_id]].ref_id,
                description=graph.results[wanted[record_id]].description,
                result_created_at=graph.results[wanted[record_id]].created_at,
                asked_at=now,
                token=token,
            )
            for record_id in sorted(chosen)  # one lock order for concurrent engines
        ],
        update_conflicts=True,
        unique_fields=["record"],
        update_fields=["cache_ref_id", "description", "result_created_at", "asked_at", "token"],
    )
    return [
        {"Digest": wanted[record_id], "CacheRefID": graph.results[wanted[record_id]].ref_id}
        for record_id in chosen
    ]


# ---- /layers ----------------------------------------------------------------------------


class LayersError(ValueError):
    """The body is not a /layers payload at all."""


def _descriptor_problem(desc):
    """Why a descriptor cannot be part of an importable chain, or None."""
    if not isinstance(desc, dict):
        return "a layer descriptor is not an object"
    digest = desc.get("digest")
    if not is_digest(digest):
        return f"layer digest {digest!r} is not a digest"
    size = desc.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return f"layer {digest} has no valid size"
    media_type = desc.get("mediaType")
    if not isinstance(media_type, str) or not media_type or "\x00" in media_type:
        return f"layer {digest} has no valid media type"
    annotations = desc.get("annotations")
    if not isinstance(annotations, dict) or not is_digest(annotations.get(DIFF_ID_ANNOTATION)):
        return f"layer {digest} has no valid {DIFF_ID_ANNOTATION} annotation"
    return None


def parse_layers_payload(body):
    entries = body.get("UpdatedRecords")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise LayersError("UpdatedRecords must be a list")
    parsed = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise LayersError(f"UpdatedRecords[{n}] must be an object")
        digest = entry.get("RecordDigest")
        if not isinstance(digest, str):
            raise LayersError(f"UpdatedRecords[{n}].RecordDigest must be a string")
        layers = entry.get("Layers")
        if layers is not None and not isinstance(layers, list):
            raise LayersError(f"UpdatedRecords[{n}].Layers must be a list")
        parsed.append((digest, layers or []))
    return parsed


def chain_hash(digests):
    return "sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest()


# Why /layers refused a record, as the activity counters label it (the answer's Reason
# says it in words, with the digests concerned).
REFUSED_NO_LAYERS = "no_layers"
REFUSED_BAD_DESCRIPTOR = "bad_descriptor"
REFUSED_NOT_A_RECORD = "not_a_record"
REFUSED_BLOB_MISSING = "blob_not_verified"
REFUSED_SIZE_MISMATCH = "size_mismatch"


def update_layers(organization, token, body, now=None, engine_ref=None):
    """Attach uploaded layer chains to our records.

    Returns ({"Accepted": [...], "Refused": [...]}, {refusal kind: count}); `engine_ref`
    is the exporting engine's pk when known (Result.engine)."""
    now = now or timezone.now()
    entries = parse_layers_payload(body)
    refused = []
    candidates = []
    for digest, layers in entries:
        if not layers:
            refused.append((digest, REFUSED_NO_LAYERS, "no layers: an empty chain cannot be imported"))
            continue
        problem = next((p for p in map(_descriptor_problem, layers) if p), None)
        if problem:
            refused.append((digest, REFUSED_BAD_DESCRIPTOR, problem))
            continue
        candidates.append((digest, layers))
    records = _records_by_identity(organization, {d for d, _ in candidates if is_digest(d)}, ("identity", "id"))
    blob_sizes = verified_blob_sizes(organization, {desc["digest"] for _, ls in candidates for desc in ls})
    accepted = []
    for digest, layers in candidates:
        if digest not in records:
            refused.append((digest, REFUSED_NOT_A_RECORD, "not a record of this organization"))
            continue
        problem = None
        for desc in layers:
            size = blob_sizes.get(desc["digest"])
            if size is None:
                problem = REFUSED_BLOB_MISSING, f"blob {desc['digest']} is not uploaded and verified"
            elif size != desc["size"]:
                problem = (
                    REFUSED_SIZE_MISMATCH,
                    f"blob {desc['digest']} is {size} bytes, the descriptor says {desc['size']}",
                )
            if problem:
                break
        if problem:
            refused.append((digest, *problem))
        else:
            accepted.append((records[digest][0], digest, layers))
    if accepted:
        with transaction.atomic():
            _store_results(organization, token, accepted, now, engine_ref)
            mark_changed(organization)
    kinds = {}
    for digest, kind, reason in refused:
        log.warning("layers org=%s refused record %s: %s", organization.slug, digest, reason)
        kinds[kind] = kinds.get(kind, 0) + 1
    answer = {
        "Accepted": [digest for _, digest, _ in accepted],
        "Refused": [{"RecordDigest": digest, "Reason": reason} for digest, _, reason in refused],
    }
    return answer, kinds


def _store_results(organization, token, accepted, now, engine_ref=None):
    descriptors = {}
    for _, _, layers in accepted:
        for desc in layers:
            descriptors.setdefault(desc["digest"], desc)
    # Rows are written in sorted order throughout: concurrent exports then take their
    # locks in one order and wait for each other instead of deadlocking.
    Layer.objects.bulk_create(
        [
            Layer(
                organization=organization,
                digest=digest,
                media_type=desc["mediaType"][:255],
                size=desc["size"],
                diff_id=desc["annotations"][DIFF_ID_ANNOTATION],
                created_at=parse_time(desc["annotations"].get(CREATED_AT_ANNOTATION)) or now,
                last_used_at=now,
            )
            for digest, desc in sorted(descriptors.items())
        ],
        ignore_conflicts=True,
    )
    layer_ids = {}
    for chunk in batched(descriptors):
        layer_ids.update(
            Layer.objects.filter(organization=organization, digest__in=chunk).values_list("digest", "id")
        )
    # Only layers not marked used lately: every export of an organization shares its
    # base layers, and rewriting those hot rows on each /layers serialized them all.
    stale = now - LAST_USED_PRECISION
    for chunk in batched(sorted(layer_ids.values())):
        touched = _locked_ids(Layer.objects.filter(id__in=chunk, last_used_at__lt=stale))
        if touched:
            Layer.objects.filter(id__in=touched).update(last_used_at=now)

    record_ids = sorted({record_id for record_id, _, _ in accepted})
    pending = {}
    for chunk in batched(record_ids):
        pending.update((p.record_id, p) for p in PendingExport.objects.filter(record_id__in=chunk))
    if engine_ref is None and token is not None:
        # Not called from an engine request (no address to match): the token's latest engine.
        engine_ref = Engine.objects.filter(last_token=token).order_by("-last_seen").values_list("pk", flat=True).first()
    chains = {}
    results = []
    for record_id, _, layers in sorted(accepted, key=lambda entry: entry[0]):
        digests = [desc["digest"] for desc in layers]
        chain = chain_hash(digests)
        chains[(record_id, chain)] = digests
        asked = pending.get(record_id)
        results.append(
            Result(
                record_id=record_id,
                chain=chain,
                complete=True,
                cache_ref_id=asked.cache_ref_id if asked else "",
                description=asked.description if asked else "",
                created_at=asked.result_created_at if asked else now,
                exported_at=now,
                token=token,
                engine_id=engine_ref or None,
                size=layers[-1]["size"],
                chain_size=sum(desc["size"] for desc in layers),
                layer_count=len(layers),
                top_digest=digests[-1],
            )
        )
    Result.objects.bulk_create(results, ignore_conflicts=True)
    stored = {}
    for chunk in batched(record_ids):
        for result_id, record_id, chain, complete in Result.objects.filter(record_id__in=chunk).values_list(
            "id", "record_id", "chain", "complete"
        ):
            if (record_id, chain) in chains:
                stored[(record_id, chain)] = (result_id, complete)
    # A chain delivered again (after its blobs were lost and uploaded anew) is complete again.
    again = [result_id for result_id, complete in stored.values() if not complete]
    for chunk in batched(sorted(again)):
        Result.objects.filter(id__in=_locked_ids(Result.objects.filter(id__in=chunk))).update(
            complete=True, exported_at=now
        )
    ResultLayer.objects.bulk_create(
        [
            ResultLayer(result_id=stored[key][0], position=position, layer_id=layer_ids[digest])
            for key, digests in sorted(chains.items(), key=lambda item: stored[item[0]][0])
            for position, digest in enumerate(digests)
        ],
        ignore_conflicts=True,
    )
    for chunk in batched(record_ids):
        unmarked = _locked_ids(Record.objects.filter(id__in=chunk, has_result=False))
        if unmarked:
            Record.objects.filter(id__in=unmarked).update(has_result=True)
        delivered = _locked_ids(PendingExport.objects.filter(record_id__in=chunk))
        if delivered:
            PendingExport.objects.filter(id__in=delivered).delete()


def _locked_ids(queryset):
    """Lock the rows of `queryset` in id order and return their ids. An UPDATE or DELETE
    ... WHERE id IN (...) locks rows in whatever order its scan meets them, whatever the
    order of the list, so two exports touching the same rows deadlocked; SELECT ...
    ORDER BY id FOR NO KEY UPDATE locks them in one order (PostgreSQL sorts before
    locking), and, like the UPDATE itself, lets foreign-key checks (FOR KEY SHARE) through."""
    return list(queryset.order_by("id").select_for_update(no_key=True).values_list("id", flat=True))


# ---- import snapshot bookkeeping --------------------------------------------------------


def mark_changed(organization):
    """Say that the organization's import must be rebuilt; call inside the changing
    transaction. The rebuild is queued once the change is committed, and /import rebuilds
    on demand if no worker got to it first."""
    snapshot, created = ImportSnapshot.objects.get_or_create(organization=organization)
    if not created:
        ImportSnapshot.objects.filter(pk=snapshot.pk).update(generation=F("generation") + 1)
    from records.tasks import rebuild_import

    # Recorded in this transaction (one pending rebuild per organization), published
    # after it commits; a broker outage delays it until the outbox sweep.
    outbox.enqueue(rebuild_import, [organization.pk])


def blobs_lost(organization, digests):
    """Blobs that are no longer stored: results using them are incomplete from now on.

    For the blob app to call when it deletes or evicts blobs, so that imports stop naming
    them and engines are asked to export those records again.
    """
    digests = list(set(digests))
    if not digests:
        return 0
    with transaction.atomic():
        layer_ids = []
        for chunk in batched(digests):
            layer_ids += Layer.objects.filter(organization=organization, digest__in=chunk).values_list(
                "id", flat=True
            )
        result_ids = set()
        for chunk in batched(layer_ids):
            result_ids.update(
                ResultLayer.objects.filter(layer_id__in=chunk, result__complete=True).values_list(
                    "result_id", flat=True
                )
            )
        if not result_ids:
            return 0
        record_ids = set()
        for chunk in batched(result_ids):
            record_ids.update(Result.objects.filter(id__in=chunk).values_list("record_id", flat=True))
            Result.objects.filter(id__in=chunk).update(complete=False)
        still = set()
        for chunk in batched(record_ids):
            still.update(
                Result.objects.filter(record_id__in=chunk, complete=True).values_list("record_id", flat=True)
            )
        for chunk in batched(record_ids - still):
            Record.objects.filter(id__in=chunk).update(has_result=False)
        mark_changed(organization)
    return len(result_ids)
