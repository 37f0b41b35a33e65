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
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import timedelta

import orjson
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from cacheweb import outbox
from records import importbody
from records.digests import is_digest, is_random
from records.importbody import InvalidConfig
from records.models import ImportSnapshot
from records.services import gc_paused

log = logging.getLogger("cacheweb.records")

# Level 1 is three times faster than 6 on configs of megabytes and only ~8 % larger.
GZIP_LEVEL = 1
# A claim to build older than three times the last build (within these bounds) is taken
# to belong to a process that died, or that lost the database before it could release
# the claim: engines are then served the old body at most that long.
BUILD_CLAIM_MIN = timedelta(seconds=15)
BUILD_CLAIM = timedelta(minutes=5)


EMPTY_CONFIG = b'{"layers":[],"records":[]}'


def build_config(organization):
    """The config as a dict, deterministic for the same stored rows: the body
    records.importbody writes, parsed. Raises InvalidConfig where buildkit's ParseConfig
    would refuse it (possible only with rows edited by hand): the build checks the rules
    check_config states on a finished config as it goes, instead of walking it again."""
    return orjson.loads(importbody.build(organization)[0])


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
        body, records, layers = importbody.build(organization)  # checked as it is built
    return Built(
        body=body,
        gzip=gzip.compress(body, GZIP_LEVEL, mtime=0),
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        records=records,
        layers=layers,
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
