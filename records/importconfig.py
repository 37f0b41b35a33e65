"""The organization's /import body: buildkit's cache config (cache/remotecache/v1/spec.go).

A pure function of stored rows. What shapes it (docs/protocol.md, "Import: how an
engine gets the cache back"): buildkit keeps one result per record, stores an input-less
record under its digest (a second one with that digest replaces the first), drops
`random:` digests, and fails the whole import on a layer without diffID, an index out of
range or a loop.
Identities make root digests unique and loops impossible, and `random:` keys are never
stored; the build still checks all of that (and every digest) as it goes, so that rows
edited by hand never reach an engine; `check_config` states the same rules on a finished
config.
"""

import gzip
import hashlib
import logging
import re
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import timedelta

import orjson
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from blobs.models import Blob, BlobState
from cacheweb import outbox
from records.digests import is_digest, is_random
from records.services import gc_paused
from records.models import ImportSnapshot, Layer, Record, RecordInput, Result, ResultLayer

log = logging.getLogger("cacheweb.records")

# Level 1 is three times faster than 6 on configs of megabytes and only ~8 % larger.
GZIP_LEVEL = 1
# A claim to build older than three times the last build (within these bounds) is taken
# to belong to a process that died, or that lost the database before it could release
# the claim: engines are then served the old body at most that long.
BUILD_CLAIM_MIN = timedelta(seconds=15)
BUILD_CLAIM = timedelta(minutes=5)


EMPTY_CONFIG = b'{"layers":[],"records":[]}'


class InvalidConfig(AssertionError):
    """A config buildkit would refuse: a bug here, never to be served."""


def _utc_text(column):
    """SQL rendering `column` as RFC 3339 UTC text: parsing tens of thousands of datetimes
    in Python only to print them again costs more than the rest of the build."""
    if connection.vendor == "postgresql":
        return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
    # SQLite holds Django's naive UTC text, "YYYY-MM-DD HH:MM:SS[.ffffff]".
    return f"replace({column}, ' ', 'T') || 'Z'"


def _query(sql, params):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _results_with_chains(organization):
    """{record id: (chain, created_at text)}: per record, the newest complete result (by
    acceptance) whose layers are all present and verified. A chain is a list of
    (digest, media type, size, diffID, created text), base first."""
    org = [organization.pk]
    # Three narrow reads rather than one join repeating each layer's columns per use; no
    # ORDER BY, which spills to disk on tens of thousands of rows: grouped here instead.
    results = _query(
        f"""
        SELECT res.id, res.record_id, {_utc_text("res.created_at")}, {_utc_text("res.exported_at")}
        FROM {Result._meta.db_table} res JOIN {Record._meta.db_table} rec ON rec.id = res.record_id
        WHERE rec.organization_id = %s AND res.complete
        """,
        org,
    )
    links = _query(
        f"""
        SELECT rl.result_id, rl.position, rl.layer_id
        FROM {ResultLayer._meta.db_table} rl
        JOIN {Result._meta.db_table} res ON res.id = rl.result_id
        JOIN {Record._meta.db_table} rec ON rec.id = res.record_id
        WHERE rec.organization_id = %s AND res.complete
        """,
        org,
    )
    # A layer the engine cannot download fails the build that uses it: only layers whose
    # blob this organization holds verified, with the layer's size, in the same read. The
    # database's verdict is the whole check: a file lost from the built-in store is found
    # (and its results dropped, the generation bumped) when it is next asked for or
    # verified (blobs.services), and blobs/identity.py makes sure the store is the one
    # these rows describe. No HEAD either: pending S3 blobs are confirmed before /layers
    # accepts a result that uses them.
    layers = {
        row[0]: row[1:]
        for row in _query(
            f"SELECT l.id, l.digest, l.media_type, l.size, l.diff_id, {_utc_text('l.created_at')} "
            f"FROM {Layer._meta.db_table} l JOIN {Blob._meta.db_table} b "
            "ON b.organization_id = l.organization_id AND b.digest = l.digest "
            "WHERE l.organization_id = %s AND b.state = %s AND b.size = l.size",
            [organization.pk, BlobState.VERIFIED],
        )
    }
    chains = defaultdict(dict)
    unusable = set()
    for result_id, position, layer_id in links:
        layer = layers.get(layer_id)
        if layer is None:
            unusable.add(result_id)
        else:
            chains[result_id][position] = layer
    chosen = {}
    newest = {}
    for result_id, record_id, created_at, exported_at in results:
        chain = chains.get(result_id)
        if not chain or result_id in unusable or len(chain) != max(chain) + 1:
            continue
        # SQLite's text drops a zero fraction: pad it so that text order is time order.
        rank = (exported_at if "." in exported_at else exported_at[:-1] + ".000000Z", result_id)
        if record_id not in newest or rank > newest[record_id]:
            newest[record_id] = rank
            chosen[record_id] = (chain, created_at)
    return {record_id: ([chain[n] for n in range(len(chain))], created_at) for record_id, (chain, created_at) in chosen.items()}


# What buildkit's digest parser takes, for many digests at once: one regex pass over
# them joined by newlines instead of a call per digest.
_DIGEST_LINES = re.compile(r"(?:(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})\n)*")


def _all_digests(values):
    values = list(values)
    return not values or (
        all(type(value) is str for value in values)
        and _DIGEST_LINES.fullmatch("\n".join(values) + "\n") is not None
    )


def build_config(organization):
    """The config as a dict, deterministic for the same stored rows. Raises InvalidConfig
    where buildkit's ParseConfig would refuse it (possible only with rows edited by hand):
    the arrays are checked as they are built, against the rules check_config states on a
    finished config, instead of walking the config again."""
    results = _results_with_chains(organization)

    inputs = defaultdict(list)
    for record_id, index, selector, source_id in _query(
        f'SELECT record_id, "index", selector, source_id FROM {RecordInput._meta.db_table} '
        "WHERE organization_id = %s",
        [organization.pk],
    ):
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
    for record_id, digest, input_count in _query(
        f"SELECT id, digest, input_count FROM {Record._meta.db_table} WHERE organization_id = %s",
        [organization.pk],
    ):
        if record_id in needed:
            rows[record_id] = (digest, record_id, input_count)

    order = sorted(rows, key=rows.__getitem__)  # by digest, then id: deterministic
    position = {record_id: n for n, record_id in enumerate(order)}

    # One layer entry per distinct chain prefix; sorting the prefixes puts every parent
    # before its children, so parents always point back and never loop.
    prefixes = {}
    top_prefix = {}
    for record_id, (chain, _) in results.items():
        prefix = ()
        for row in chain:
            prefix += (row[0],)
            if prefix not in prefixes:
                prefixes[prefix] = row
        top_prefix[record_id] = prefix
    prefix_order = sorted(prefixes)
    prefix_index = {prefix: n for n, prefix in enumerate(prefix_order)}
    layers = []
    for prefix in prefix_order:
        digest, media_type, size, diff_id, created_at = prefixes[prefix]
        layers.append(
            {
                "blob": digest,
                "parent": prefix_index[prefix[:-1]] if len(prefix) > 1 else -1,
                "annotations": {"mediaType": media_type, "diffID": diff_id, "size": size, "createdAt": created_at},
            }
        )
    rows_of_layers = list(prefixes.values())
    if not _all_digests([row[0] for row in rows_of_layers]) or not _all_digests([row[3] for row in rows_of_layers]):
        bad = next(n for n, layer in enumerate(layers) if not is_digest(layer["blob"]) or not is_digest(layer["annotations"]["diffID"]))
        raise InvalidConfig(f"layer {bad} lacks a blob digest or diffID")

    records = []
    roots = set()
    # Input edges by position, for the loop check: links always point into `records`
    # (built from `position`), but rows edited by hand can still make a cycle.
    sources = []
    no_inputs = ()
    for record_id in order:
        digest, _, input_count = rows[record_id]
        if digest.startswith("random:"):
            raise InvalidConfig(f"record {len(records)} has a random digest")
        record = {"digest": digest}
        entries = inputs.get(record_id, no_inputs) if input_count else no_inputs
        if input_count == 1 and len(entries) == 1 and entries[0][0] == 0 and entries[0][2] in position:
            # Most records: one input, one alternative.
            link = position[entries[0][2]]
            sources.append((link,))
            record["inputs"] = [[{"selector": entries[0][1], "link": link}]]
        elif input_count:
            by_index = [[] for _ in range(input_count)]
            for index, selector, source_id in entries:
                if index < input_count and source_id in position:
                    by_index[index].append((position[source_id], selector))
            links = set()
            for alternatives in by_index:
                if not alternatives:
                    raise InvalidConfig(f"record {len(records)} has an input without alternatives")
                if len(alternatives) > 1:
                    alternatives.sort()
                    links.update(link for link, _ in alternatives)
                else:
                    links.add(alternatives[0][0])
            sources.append(links)
            record["inputs"] = [
                [{"selector": selector, "link": link} for link, selector in alternatives] for alternatives in by_index
            ]
        else:
            if digest in roots:
                raise InvalidConfig(f"root digest {digest} appears twice")
            roots.add(digest)
            sources.append(no_inputs)
        result = results.get(record_id)
        if result is not None:
            record["layers"] = [{"layer": prefix_index[top_prefix[record_id]], "createdAt": result[1]}]
        records.append(record)
    _check_acyclic(sources)
    return {"layers": layers, "records": records}


def _check_acyclic(sources):
    """InvalidConfig unless following `sources` (per record, the positions it links to)
    always ends: Kahn's algorithm over positions."""
    waiting = [len(links) for links in sources]
    users = [[] for _ in sources]
    for n, links in enumerate(sources):
        for source in links:
            users[source].append(n)
    queue = [n for n, count in enumerate(waiting) if not count]
    for n in queue:  # grows as it goes
        for user in users[n]:
            waiting[user] -= 1
            if not waiting[user]:
                queue.append(user)
    if len(queue) != len(sources):
        raise InvalidConfig(f"{len(sources) - len(queue)} records are in or behind a loop")


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
    generation: int = 0  # the generation stored with it, once stored


def render(organization):
    with gc_paused():
        config = build_config(organization)  # checked as it is built
        body = orjson.dumps(config)
    return Built(
        body=body,
        gzip=gzip.compress(body, GZIP_LEVEL, mtime=0),
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        records=len(config["records"]),
        layers=len(config["layers"]),
    )


def claim_lifetime(build_ms):
    return min(BUILD_CLAIM, max(BUILD_CLAIM_MIN, timedelta(milliseconds=3 * build_ms)))


def _claim_pk(snapshot_pk):
    """Become the one process building this import: the claim's time, or None if another
    one is at it (a claim older than claim_lifetime of the last build is a dead one's)."""
    now = timezone.now()
    build_ms = ImportSnapshot.objects.filter(pk=snapshot_pk).values_list("build_ms", flat=True).first() or 0
    claimed = (
        ImportSnapshot.objects.filter(pk=snapshot_pk)
        .filter(Q(building_since__isnull=True) | Q(building_since__lt=now - claim_lifetime(build_ms)))
        .update(building_since=now)
    )
    return now if claimed else None


def _release(snapshot_pk, claimed_at):
    """Give the claim up (only ours: a claim taken over meanwhile is another builder's).
    A connection the database dropped is replaced once; if the database is still down,
    the claim lapses after claim_lifetime."""
    for attempt in (1, 2):
        try:
            ImportSnapshot.objects.filter(pk=snapshot_pk, building_since=claimed_at).update(building_since=None)
            return True
        except DatabaseError:
            if attempt == 2 or connection.in_atomic_block:
                log.warning("could not release the import build claim of snapshot %s", snapshot_pk, exc_info=True)
                return False
            connection.close()
    return False


# A builder that finds the generation moved while it built builds again, at most this many
# times in all; past that (changes arriving faster than builds) it queues the next build
# rather than hold a worker.
REBUILD_ROUNDS = 3
# How often a request waiting for another process's build looks at the snapshot row.
WAIT_POLL = (0.02, 0.2)


def _generations(snapshot_pk):
    return ImportSnapshot.objects.filter(pk=snapshot_pk).values_list("generation", "built_generation").get()


def _store(snapshot_pk, organization, force, rounds):
    """One claim, up to `rounds` builds: (the last Built stored or None, whether the
    generation is still ahead of what is stored)."""
    stored = None
    for _ in range(rounds):
        claimed_at = _claim_pk(snapshot_pk)
        if claimed_at is None and not force:
            # Another process is building: it looks at the generation again once it has
            # released its claim, so what made this call is built there.
            return stored, False
        try:
            # Read the generation before the rows: a change made meanwhile bumps it past
            # what is stored, and is built in the next round.
            generation, built_generation = _generations(snapshot_pk)
            if built_generation >= generation and not force:
                return stored, False
            started = time.monotonic()
            built = render(organization)
            elapsed_ms = (time.monotonic() - started) * 1000
            with transaction.atomic():
                updated = ImportSnapshot.objects.filter(pk=snapshot_pk, built_generation__lt=generation).update(
                    built_generation=generation,
                    body_gzip=built.gzip,
                    etag=built.etag,
                    size=len(built.body),
                    record_count=built.records,
                    layer_count=built.layers,
                    built_at=timezone.now(),
                    build_ms=elapsed_ms,
                )
        finally:
            if claimed_at is not None:
                _release(snapshot_pk, claimed_at)
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
        if updated:
            built.generation = generation
            stored = built
        force = False
        # Read after the release: a change whose task found the claim held (and so built
        # nothing) was committed before that, and is seen here.
        generation, built_generation = _generations(snapshot_pk)
        if built_generation >= generation:
            return stored, False
    return stored, True


def rebuild(organization, force=False, rounds=REBUILD_ROUNDS):
    """Build the import for the generation current now and store it; the last Built
    stored, or None when nothing was (another process is building, or the stored body
    is current). Safe to run twice: an older build never overwrites a newer one. Unless
    `force`d, only one process builds at a time, so that engines importing together after
    a change do not each spend seconds of CPU on the same body; changes committed while it
    builds are folded into its next round (up to `rounds` builds, then a queued task)."""
    snapshot, _ = ImportSnapshot.objects.get_or_create(organization=organization)
    stored, behind = _store(snapshot.pk, organization, force, rounds)
    if behind:
        from records.tasks import rebuild_import

        outbox.enqueue(rebuild_import, [organization.pk])
    return stored


# The last bodies this process served, by organization: (etag, gzip body). Checking that
# an etag is still current is a one-row query; fetching megabytes of bytea is not.
_served = {}
SERVED_CACHE_ORGS = 16


def _state(organization):
    return (
        ImportSnapshot.objects.filter(organization=organization)
        .values_list("generation", "built_generation", "etag")
        .first()
    )


def _stored_body(organization, etag):
    cached = _served.get(organization.pk)
    if cached is not None and cached[0] == etag:
        return cached[1], etag
    row = ImportSnapshot.objects.filter(organization=organization).values_list("body_gzip", "etag").first()
    if row is None or not row[0]:
        return None
    _remember(organization.pk, row[1], bytes(row[0]))
    return bytes(row[0]), row[1]


def _wait(seconds):
    """Pause while another process builds (a function of its own, for tests to watch)."""
    time.sleep(seconds)


def current(organization):
    """(gzip body, etag) of the organization's current import.

    Fresh: the body served includes every change committed before this call read the
    generation (an engine's /layers answered 200 before it asked /import). A stale body is
    rebuilt here, or, while another process builds, that build is waited for, at most
    settings.IMPORT_WAIT seconds; past that the last good body is served (and logged)."""
    state = _state(organization)
    if state is None or not state[2]:
        return _first_build(organization)
    wanted = state[0]
    deadline = time.monotonic() + settings.IMPORT_WAIT
    poll = WAIT_POLL[0]
    while True:
        if state[1] >= wanted and state[2]:
            served = _stored_body(organization, state[2])
            if served is not None:
                return served
        try:
            built = rebuild(organization, rounds=1)
        except InvalidConfig:
            log.exception("import of org=%s is invalid; serving the last good one", organization.slug)
            return _last_good(organization)
        if built is not None and built.generation >= wanted:
            _remember(organization.pk, built.etag, built.gzip)
            return built.gzip, built.etag
        state = _state(organization)
        if state is None or not state[2]:
            return _first_build(organization)
        if state[1] >= wanted:
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            log.warning(
                "import of org=%s: generation %s not built within CACHEWEB_IMPORT_WAIT=%ss (stored: %s); "
                "serving the last good body",
                organization.slug,
                wanted,
                settings.IMPORT_WAIT,
                state[1],
            )
            return _last_good(organization)
        _wait(min(poll, left))
        poll = min(poll * 2, WAIT_POLL[1])


def _first_build(organization):
    """No body stored yet: build here, whoever else is at it (nothing to serve meanwhile)."""
    try:
        built = rebuild(organization, force=True, rounds=1)
    except InvalidConfig:
        log.exception("import of org=%s is invalid; serving the last good one", organization.slug)
        return _last_good(organization)
    if built is None:
        # Another process stored a build at least as new meanwhile.
        return _last_good(organization)
    _remember(organization.pk, built.etag, built.gzip)
    return built.gzip, built.etag


def _last_good(organization):
    """Whatever the engine gets must parse: the stored body if there is one (only
    hand-edited rows make a build invalid), else an empty cache."""
    snapshot = ImportSnapshot.objects.filter(organization=organization).values_list("body_gzip", "etag").first()
    if snapshot is not None and snapshot[0] and snapshot[1]:
        return bytes(snapshot[0]), snapshot[1]
    return gzip.compress(EMPTY_CONFIG, GZIP_LEVEL, mtime=0), '"empty"'


def _remember(organization_id, etag, body):
    _served.pop(organization_id, None)
    while len(_served) >= SERVED_CACHE_ORGS:
        _served.pop(next(iter(_served)))
    _served[organization_id] = (etag, body)
