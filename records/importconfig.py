"""The organization's /import body: buildkit's cache config (cache/remotecache/v1/spec.go).

A pure function of stored rows. What shapes it (PROTOCOL.md, "Import, as the engine
does it"): buildkit keeps one result per record, stores an input-less record under its
digest (a second one with that digest replaces the first), drops `random:` digests, and
fails the whole import on a layer without diffID, an index out of range or a loop.
Identities make root digests unique and loops impossible, and `random:` keys are never
stored; `check_config` still verifies the output before it is served.
"""

import gzip
import hashlib
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass

import orjson
from django.db import transaction
from django.utils import timezone

from blobs.services import verified_blob_sizes
from records.digests import format_time, is_digest, is_random
from records.models import ImportSnapshot, Layer, Record, RecordInput, Result, ResultLayer

log = logging.getLogger("cacheweb.records")

GZIP_LEVEL = 6


class InvalidConfig(AssertionError):
    """A config buildkit would refuse: a bug here, never to be served."""


def _complete_results(organization):
    """{record id: [(result id, created_at), ...]} oldest accepted first."""
    results = defaultdict(list)
    rows = (
        Result.objects.filter(record__organization=organization, complete=True)
        .order_by("record_id", "exported_at", "id")
        .values_list("record_id", "id", "created_at")
    )
    for record_id, result_id, created_at in rows:
        results[record_id].append((result_id, created_at))
    return results


def _chains(organization):
    """{result id: [layer row, ...] base first} for the complete results whose blobs are
    all still present and verified: a layer the engine cannot read fails its build."""
    positions = defaultdict(list)
    rows = ResultLayer.objects.filter(result__record__organization=organization, result__complete=True)
    for result_id, position, layer_id in rows.values_list("result_id", "position", "layer_id"):
        positions[result_id].append((position, layer_id))
    layers = {
        row[0]: row
        for row in Layer.objects.filter(organization=organization).values_list(
            "id", "digest", "media_type", "size", "diff_id", "created_at"
        )
    }
    present = verified_blob_sizes(organization, [row[1] for row in layers.values()])
    chains = {}
    for result_id, entries in positions.items():
        entries.sort()
        if [p for p, _ in entries] != list(range(len(entries))):
            continue
        chain = [layers.get(layer_id) for _, layer_id in entries]
        if all(row is not None and present.get(row[1]) == row[3] for row in chain):
            chains[result_id] = chain
    return chains


def build_config(organization):
    """The config as a dict, deterministic for the same stored rows."""
    chains = _chains(organization)
    # Buildkit keeps one result per record: the newest whose layers can all be read.
    results = {}
    for record_id, candidates in _complete_results(organization).items():
        for result_id, created_at in reversed(candidates):
            if result_id in chains:
                results[record_id] = (chains[result_id], created_at)
                break

    inputs = defaultdict(list)
    for record_id, index, selector, source_id in RecordInput.objects.filter(
        organization=organization
    ).values_list("record_id", "index", "selector", "source_id"):
        inputs[record_id].append((index, selector, source_id))

    # Every record with a result, and everything reachable from it through inputs, so that
    # a lookup from root keys can walk down to it.
    needed = set(results)
    queue = deque(results)
    while queue:
        for _, _, source_id in inputs.get(queue.popleft(), ()):
            if source_id not in needed:
                needed.add(source_id)
                queue.append(source_id)
    rows = {}
    for record_id, identity, digest, input_count in Record.objects.filter(organization=organization).values_list(
        "id", "identity", "digest", "input_count"
    ):
        if record_id in needed:
            rows[record_id] = (digest, identity, input_count)

    order = sorted(rows, key=lambda record_id: rows[record_id][:2])
    position = {record_id: n for n, record_id in enumerate(order)}

    # One layer entry per distinct chain prefix; sorting the prefixes puts every parent
    # before its children.
    prefixes = {}
    for chain, _ in results.values():
        for end in range(1, len(chain) + 1):
            prefix = tuple(row[1] for row in chain[:end])
            prefixes.setdefault(prefix, chain[end - 1])
    prefix_order = sorted(prefixes)
    prefix_index = {prefix: n for n, prefix in enumerate(prefix_order)}
    layers = [
        {
            "blob": prefix[-1],
            "parent": prefix_index[prefix[:-1]] if len(prefix) > 1 else -1,
            "annotations": {
                "mediaType": prefixes[prefix][2],
                "diffID": prefixes[prefix][4],
                "size": prefixes[prefix][3],
                "createdAt": format_time(prefixes[prefix][5]),
            },
        }
        for prefix in prefix_order
    ]

    records = []
    for record_id in order:
        digest, _, input_count = rows[record_id]
        record = {"digest": digest}
        by_index = [[] for _ in range(input_count)]
        for index, selector, source_id in inputs.get(record_id, ()):
            if index < input_count and source_id in position:
                by_index[index].append((position[source_id], selector))
        if by_index:
            record["inputs"] = [
                [{"selector": selector, "link": link} for link, selector in sorted(alternatives)]
                for alternatives in by_index
            ]
        if record_id in results:
            chain, created_at = results[record_id]
            record["layers"] = [
                {"layer": prefix_index[tuple(row[1] for row in chain)], "createdAt": format_time(created_at)}
            ]
        records.append(record)
    return {"layers": layers, "records": records}


def check_config(config):
    """Raise InvalidConfig where buildkit's ParseConfig (or the engine) would fail."""
    layers, records = config["layers"], config["records"]
    for n, layer in enumerate(layers):
        annotations = layer.get("annotations") or {}
        if not is_digest(layer.get("blob")) or not is_digest(annotations.get("diffID")):
            raise InvalidConfig(f"layer {n} lacks a blob digest or diffID")
        parent = layer["parent"]
        # Parents come first, so following them always terminates.
        if not (parent == -1 or 0 <= parent < n):
            raise InvalidConfig(f"layer {n} has parent {parent}")
    roots = set()
    for n, record in enumerate(records):
        if is_random(record["digest"]):
            raise InvalidConfig(f"record {n} has a random digest")
        alternatives = record.get("inputs", [])
        if not alternatives:
            if record["digest"] in roots:
                raise InvalidConfig(f"root digest {record['digest']} appears twice")
            roots.add(record["digest"])
        for inputs in alternatives:
            if not inputs:
                raise InvalidConfig(f"record {n} has an input without alternatives")
            for alternative in inputs:
                if not 0 <= alternative["link"] < len(records):
                    raise InvalidConfig(f"record {n} links to {alternative['link']}")
        for result in record.get("layers", []):
            if not 0 <= result["layer"] < len(layers):
                raise InvalidConfig(f"record {n} names layer {result['layer']}")
        if len(record.get("layers", [])) > 1:
            raise InvalidConfig(f"record {n} has several results")
    _check_no_loops(records)


def _check_no_loops(records):
    waiting = [len({a["link"] for inputs in r.get("inputs", []) for a in inputs}) for r in records]
    users = defaultdict(list)
    for n, record in enumerate(records):
        for source in {a["link"] for inputs in record.get("inputs", []) for a in inputs}:
            users[source].append(n)
    queue = deque(n for n, w in enumerate(waiting) if w == 0)
    done = 0
    while queue:
        n = queue.popleft()
        done += 1
        for user in users[n]:
            waiting[user] -= 1
            if not waiting[user]:
                queue.append(user)
    if done != len(records):
        raise InvalidConfig(f"{len(records) - done} records are in or behind a loop")


@dataclass
class Built:
    body: bytes
    gzip: bytes
    etag: str
    records: int
    layers: int


def render(organization):
    config = build_config(organization)
    check_config(config)
    body = orjson.dumps(config)
    return Built(
        body=body,
        gzip=gzip.compress(body, GZIP_LEVEL, mtime=0),
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        records=len(config["records"]),
        layers=len(config["layers"]),
    )


def rebuild(organization):
    """Build the import for the generation current now and store it. Safe to run twice:
    an older build never overwrites a newer one."""
    snapshot, _ = ImportSnapshot.objects.get_or_create(organization=organization)
    # Read the generation before the rows: a change made meanwhile bumps it past what we
    # store, and the next request rebuilds.
    generation = ImportSnapshot.objects.filter(pk=snapshot.pk).values_list("generation", flat=True).get()
    started = time.monotonic()
    built = render(organization)
    elapsed_ms = (time.monotonic() - started) * 1000
    with transaction.atomic():
        updated = ImportSnapshot.objects.filter(pk=snapshot.pk, built_generation__lt=generation).update(
            built_generation=generation,
            body_gzip=built.gzip,
            etag=built.etag,
            size=len(built.body),
            record_count=built.records,
            layer_count=built.layers,
            built_at=timezone.now(),
            build_ms=elapsed_ms,
        )
    log.info(
        "import built org=%s generation=%s records=%s layers=%s bytes=%s gzip=%s ms=%.0f stored=%s",
        organization.slug,
        generation,
        built.records,
        built.layers,
        len(built.body),
        len(built.gzip),
        elapsed_ms,
        bool(updated),
    )
    return built if updated else None


def current(organization):
    """(gzip body, etag) of the organization's current import, rebuilding it if stale."""
    snapshot = ImportSnapshot.objects.filter(organization=organization).first()
    if snapshot is not None and snapshot.current:
        return bytes(snapshot.body_gzip), snapshot.etag
    built = rebuild(organization)
    if built is None:
        # Someone stored a build at least as new meanwhile.
        snapshot = ImportSnapshot.objects.get(organization=organization)
        return bytes(snapshot.body_gzip), snapshot.etag
    return built.gzip, built.etag
