"""From an engine's /records payload to content-addressed records.

Pure functions, no database. `parse_payload` rejects what is structurally wrong (the
caller answers 400); `analyse` keeps what is sound and drops graph defects with their
dependants, so that one bad key never reaches an import.

How a key becomes a record (docs/protocol.md, "How a key becomes a record"):
- a key that is the `ID` of no link is a root; its record digest is its own ID;
- otherwise its record digest is the `Digest` shared by all its links, and its inputs are
  its links grouped by `Input`, each `(Selector, LinkedID)` one alternative;
- its identity hashes the digest and, per input index, the sorted (selector, identity)
  of its alternatives: equal builds give equal identities whatever the key IDs were.
"""

import hashlib
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from records.digests import ZERO_TIME, is_digest, is_random, parse_time

IDENTITY_VERSION = b"cacheweb-record-v1"
MAX_DESCRIPTION = 500
MAX_REF_ID = 255  # buildkit's ref IDs are 25 characters; the column holds 255


class PayloadError(ValueError):
    """The body is not a /records payload at all (wrong types, missing ID)."""


@dataclass(slots=True)
class KeyResult:
    ref_id: str
    created_at: object
    description: str


@dataclass
class Payload:
    # key ID -> its newest result (None when it has none)
    keys: dict
    # (ID, LinkedID, Input, Digest, Selector)
    links: list


def _is_text(value):
    """A non-empty string that PostgreSQL can store (text columns refuse NUL)."""
    return isinstance(value, str) and value != "" and "\x00" not in value


def _field(obj, name, kind, where, default=None):
    value = obj.get(name, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PayloadError(f"{where}.{name} must be {_KIND_NAMES[kind]}")
    return value


_KIND_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}


def parse_payload(body):
    """Check the payload's shape and reduce it to plain values. Raises PayloadError."""
    keys = parse_keys(_field(body, "CacheKeys", list, "body", []))
    links = [parse_link(entry, n) for n, entry in enumerate(_field(body, "Links", list, "body", []))]
    return Payload(keys=keys, links=links)


def parse_keys(keys_in):
    """{key ID: its newest KeyResult or None} of a CacheKeys list. Raises PayloadError."""
    keys = {}
    for n, entry in enumerate(keys_in):
        if not isinstance(entry, dict):
            raise PayloadError(f"CacheKeys[{n}] must be an object")
        key_id = entry.get("ID")
        if not _is_text(key_id):
            raise PayloadError(f"CacheKeys[{n}].ID must be a non-empty string without NUL characters")
        newest = keys.get(key_id)
        results = entry.get("Results")
        if results is not None:
            if not isinstance(results, list):
                raise PayloadError(f"CacheKeys[{n}].Results must be a list")
            for res in results:
                # The checks inline (this runs for every result); _result_problem words
                # what failed.
                if not isinstance(res, dict):
                    raise _result_problem(n, results, res)
                ref_id = res.get("ID")
                raw_time = res.get("CreatedAt")
                description = res.get("Description")
                created = ZERO_TIME if raw_time is None else parse_time(raw_time)
                if (
                    not _is_text(ref_id)
                    or len(ref_id) > MAX_REF_ID
                    or created is None
                    or not (description is None or isinstance(description, str))
                ):
                    raise _result_problem(n, results, res)
                if newest is None or created > newest.created_at:
                    # Descriptions are the user's command lines: keep them, minus the NUL
                    # characters that PostgreSQL text cannot hold.
                    description = (description or "").replace("\x00", "")[:MAX_DESCRIPTION]
                    newest = KeyResult(ref_id, created, description)
        keys[key_id] = newest
    return keys


def _result_problem(n, results, res):
    """The PayloadError for CacheKeys[n]'s result `res`, which failed a check."""
    where = f"CacheKeys[{n}].Results[{next(m for m, r in enumerate(results) if r is res)}]"
    if not isinstance(res, dict):
        return PayloadError(f"{where} must be an object")
    ref_id = res.get("ID")
    if not _is_text(ref_id) or len(ref_id) > MAX_REF_ID:
        return PayloadError(f"{where}.ID must be a non-empty string of at most {MAX_REF_ID} characters")
    raw_time = res.get("CreatedAt")
    if raw_time is not None and parse_time(raw_time) is None:
        return PayloadError(f"{where}.CreatedAt must be an RFC 3339 time")
    return PayloadError(f"{where}.Description must be a string")


def parse_link(entry, n):
    """Links[n] as (ID, LinkedID, Input, Digest, Selector). Raises PayloadError."""
    where = f"Links[{n}]"
    if not isinstance(entry, dict):
        raise PayloadError(f"{where} must be an object")
    key_id = entry.get("ID")
    linked = entry.get("LinkedID")
    if not _is_text(key_id):
        raise PayloadError(f"{where}.ID must be a non-empty string without NUL characters")
    if not _is_text(linked):
        raise PayloadError(f"{where}.LinkedID must be a non-empty string without NUL characters")
    index = entry.get("Input", 0)
    if not isinstance(index, int) or isinstance(index, bool):
        raise PayloadError(f"{where}.Input must be an integer")
    link_digest = entry.get("Digest")
    selector = entry.get("Selector")
    if selector is None:
        selector = ""
    if not isinstance(link_digest, str) or not isinstance(selector, str):
        raise PayloadError(f"{where}.Digest and Selector must be strings")
    return (key_id, linked, index, link_digest, selector)


# Why a key was dropped. Defects poison dependants; the others only cut a path.
DEFECT_INVALID_DIGEST = "invalid digest"
DEFECT_INVALID_SELECTOR = "invalid selector"
DEFECT_DISAGREEING = "links disagree on digest"
DEFECT_DANGLING = "link to a key not in the payload"
DEFECT_BAD_INPUT = "input indexes not 0..n-1"
DEFECT_LOOP = "loop"
DEFECT_DEPENDANT = "depends on a defective key"
DROP_RANDOM = "random"
DROP_UNREACHABLE = "every alternative of an input was dropped"


@dataclass
class Graph:
    """The sound part of a payload, in dependency order."""

    # identity -> (digest, inputs) where inputs is a tuple, per input index, of sorted
    # (selector, source identity) pairs. Inputs come before the records using them. An
    # analysis of only what changed (records.keydiff) has None for the records of keys it
    # did not analyse again: stored by an earlier post.
    records: dict = field(default_factory=dict)
    # key ID -> identity, for every kept key
    identities: dict = field(default_factory=dict)
    # key ID -> why it was dropped, for every dropped key
    reasons: dict = field(default_factory=dict)
    # identity -> newest KeyResult among the keys that landed on it (Results)
    results: Mapping = field(default_factory=dict)
    # identity -> description from the key's newest result, for new rows (Descriptions)
    descriptions: Mapping = field(default_factory=dict)
    # reason -> number of keys dropped for it
    dropped: dict = field(default_factory=dict)
    unknown_link_ids: int = 0
    key_count: int = 0
    link_count: int = 0

    def stats(self):
        return {
            "keys": self.key_count,
            "links": self.link_count,
            "records": len(self.records),
            "keys_kept": len(self.identities),
            "with_results": len(self.results),
            "unknown_link_ids": self.unknown_link_ids,
            **{f"dropped[{k}]": v for k, v in sorted(self.dropped.items())},
        }

    @property
    def defects(self):
        return sum(n for reason, n in self.dropped.items() if reason not in (DROP_RANDOM, DROP_UNREACHABLE))


def _identity(digest, inputs):
    # One line per input index, its alternatives as "selector@identity" in sorted order;
    # neither digests nor identities contain "|", "@" or newlines.
    text = "\n".join([digest, *("|".join([f"{sel}@{src}" for sel, src in alts]) for alts in inputs)])
    return "sha256:" + hashlib.sha256(IDENTITY_VERSION + b"\n" + text.encode()).hexdigest()


def _remember_digest(valid, value):
    if is_digest(value):
        valid.add(value)
        return True
    return False


def analyse(payload):
    graph = Graph(key_count=len(payload.keys), link_count=len(payload.links))
    settle(graph, payload.keys, payload.links, payload.keys)
    gather(graph, payload.keys)
    return graph


def settle(graph, keys, links, present, poisoned=None, looped=frozenset()):
    """Analyse the keys of `keys` (key ID -> KeyResult or None) with their `links`
    (parse_link tuples): each kept key's identity into graph.identities, each dropped
    key's reason into graph.reasons, the new records into graph.records.

    `present` holds every key ID of the payload. Keys of it outside `keys` must be
    settled already: their identities in graph.identities when kept, in `looped` when in
    a loop or downstream of one (their dependants are too), and in `poisoned` when
    dropped for another defect (their dependants go too)."""
    # key -> {input index: {(selector, linked key)}}, and the digest its links name
    alternatives = {}
    link_digest = {}
    defect = {}
    # A busy engine repeats the same few thousand digests over tens of thousands of links.
    valid = set()
    for key_id, linked, index, dgst, selector in links:
        if key_id not in present:
            graph.unknown_link_ids += 1
            continue
        if key_id in defect:
            continue
        if linked not in present:
            defect[key_id] = DEFECT_DANGLING
        elif index < 0:
            defect[key_id] = DEFECT_BAD_INPUT
        elif dgst not in valid and not _remember_digest(valid, dgst):
            defect[key_id] = DEFECT_INVALID_DIGEST
        elif selector and selector not in valid and not _remember_digest(valid, selector):
            defect[key_id] = DEFECT_INVALID_SELECTOR
        elif link_digest.setdefault(key_id, dgst) != dgst:
            defect[key_id] = DEFECT_DISAGREEING
        else:
            inputs = alternatives.get(key_id)
            if inputs is None:
                inputs = alternatives[key_id] = {}
            alts = inputs.get(index)
            if alts is None:
                inputs[index] = {(selector, linked)}
            else:
                alts.add((selector, linked))

    for key_id in keys:
        if key_id in defect:
            continue
        inputs = alternatives.get(key_id)
        if inputs is None:
            if not is_random(key_id) and not is_digest(key_id):
                defect[key_id] = DEFECT_INVALID_DIGEST
        elif len(inputs) != max(inputs) + 1:
            defect[key_id] = DEFECT_BAD_INPUT

    # Kahn's algorithm over source -> dependant, among `keys`. Keys never reached are in
    # a loop or downstream of one.
    dependants = defaultdict(list)
    waiting = {}
    sources_of = {}
    for key_id, inputs in alternatives.items():
        sources = {linked for alts in inputs.values() for _, linked in alts}
        sources_of[key_id] = sources
        unsettled = [source for source in sources if source in keys]
        # A source in a loop is never settled, nor is what depends on it.
        waiting[key_id] = len(unsettled) + (0 if looped.isdisjoint(sources) else 1)
        for source in unsettled:
            dependants[source].append(key_id)
    queue = deque(k for k in keys if not waiting.get(k))
    poisoned = set() if poisoned is None else poisoned
    identities = graph.identities
    reasons = graph.reasons
    records = graph.records
    while queue:
        key_id = queue.popleft()
        reason = defect.get(key_id)
        inputs = alternatives.get(key_id)
        if reason is None and inputs and not sources_of[key_id].isdisjoint(poisoned):
            reason = DEFECT_DEPENDANT
        if reason is None:
            if inputs is None:
                if is_random(key_id):
                    reason = DROP_RANDOM
                else:
                    digest, resolved = key_id, ()
            else:
                digest = link_digest[key_id]
                if is_random(digest):
                    reason = DROP_RANDOM
                else:
                    resolved = []
                    for index in range(len(inputs)):
                        alts = sorted(
                            {(sel, identities[linked]) for sel, linked in inputs[index] if linked in identities}
                        )
                        if not alts:
                            reason = DROP_UNREACHABLE
                            break
                        resolved.append(tuple(alts))
                    resolved = tuple(resolved)
        if reason is None:
            identity = _identity(digest, resolved)
            identities[key_id] = identity
            if records.get(identity) is None:
                records[identity] = (digest, resolved)
        else:
            reasons[key_id] = reason
            if reason not in (DROP_RANDOM, DROP_UNREACHABLE):
                poisoned.add(key_id)
        for dependant in dependants.get(key_id, ()):
            waiting[dependant] -= 1
            if waiting[dependant] == 0:
                queue.append(dependant)
    for key_id in keys:
        if key_id not in identities and key_id not in reasons:
            reasons[key_id] = DEFECT_LOOP


def _rank(result):
    return (result.created_at, result.ref_id, result.description)


_UNPARSED = object()


class _Landed:
    """The keys with a result that landed on each record, and the winners among them,
    chosen only when asked for: a steady post's 40,000 results are mostly stored
    already, and the few still waiting for an export are all that is looked at."""

    def __init__(self, landed, parsed, entries):
        self.landed = landed  # identity -> key IDs with a result
        self.parsed = parsed  # key ID -> KeyResult, for the keys parsed in this pass
        self.entries = entries  # key ID -> CacheKeys entry, for the others
        self._chosen = {}

    def chosen(self, identity):
        """(newest result, newest result with a description or None); KeyError for a
        record no key with a result landed on."""
        chosen = self._chosen.get(identity)
        if chosen is None:
            key_ids = self.landed[identity]
            if len(key_ids) == 1:
                result = self._result(key_ids[0])
                chosen = (result, result if result.description else None)
            else:
                results = [self._result(key_id) for key_id in key_ids]
                described = [result for result in results if result.description]
                chosen = (max(results, key=_rank), max(described, key=_rank) if described else None)
            self._chosen[identity] = chosen
        return chosen

    def _result(self, key_id):
        result = self.parsed.get(key_id, _UNPARSED)
        if result is _UNPARSED:
            # An entry an earlier post's parse accepted as it is (records.keydiff).
            result = parse_keys([self.entries[key_id]])[key_id]
        return result


class Results(Mapping):
    """identity -> the newest KeyResult among the keys that landed on it. Where several
    did, the newest result wins, then the greater ref ID and description: whatever
    order the keys came in."""

    def __init__(self, landed):
        self._landed = landed

    def __getitem__(self, identity):
        return self._landed.chosen(identity)[0]

    def __iter__(self):
        return iter(self._landed.landed)

    def __len__(self):
        return len(self._landed.landed)


class Descriptions(Mapping):
    """identity -> the description of the newest result with one among its keys."""

    def __init__(self, landed):
        self._landed = landed

    def __getitem__(self, identity):
        described = self._landed.chosen(identity)[1]
        if described is None:
            raise KeyError(identity)
        return described.description

    def __iter__(self):
        return (identity for identity in self._landed.landed if self._landed.chosen(identity)[1] is not None)

    def __len__(self):
        return sum(1 for _ in self)


def gather(graph, parsed, entries=None):
    """The graph's results, descriptions and drop counts, from the identities and
    reasons of all its keys. `parsed` maps key IDs to their KeyResult or None; keys
    missing from it (records.keydiff: those not analysed again) have their CacheKeys
    entry in `entries`, parsed only if their record's result is asked for."""
    landed = {}
    for key_id, identity in graph.identities.items():
        result = parsed.get(key_id, _UNPARSED)
        if result is _UNPARSED:
            # parse_keys gives a result exactly for entries with a non-empty Results.
            has_result = bool(entries[key_id].get("Results"))
        else:
            has_result = result is not None
        if has_result:
            key_ids = landed.get(identity)
            if key_ids is None:
                landed[identity] = [key_id]
            else:
                key_ids.append(key_id)
    chooser = _Landed(landed, parsed, entries)
    graph.results = Results(chooser)
    graph.descriptions = Descriptions(chooser)
    dropped = defaultdict(int)
    for reason in graph.reasons.values():
        dropped[reason] += 1
    graph.dropped = dict(dropped)
