"""The /import body written straight from the rows, as bytes.

records.importconfig states what the body is (buildkit's cache config) and when it is
built; this module builds it. Building dicts only for orjson to walk them again cost more
than reading the rows: the body is written here as JSON text instead, byte for byte what
`orjson.dumps` gives for the same config (key order as in build_config's dicts, strings
escaped the way orjson escapes them), which tests/test_import_body.py checks against a
plain dict build on the same rows.
"""

import re
from collections import defaultdict, deque

import orjson
from django.db import connection

from blobs.models import Blob, BlobState
from records.models import Layer, Record, RecordInput, Result, ResultLayer


class InvalidConfig(AssertionError):
    """A config buildkit would refuse: a bug here, never to be served."""


# The only characters orjson escapes in a string (it writes the rest, non-ASCII too, as
# they are): text without them goes into the body as it is.
_ESCAPED = re.compile(r'["\\\x00-\x1f]')
# What buildkit's digest parser takes, for many digests at once: one regex pass over
# them joined by newlines instead of a call per digest.
_DIGEST_LINES = re.compile(r"(?:(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})\n)*")


def _all_digests(values):
    return not values or _DIGEST_LINES.fullmatch("\n".join(values) + "\n") is not None


def _escaped(text):
    """`text` as it appears between the quotes of orjson's output."""
    return orjson.dumps(text).decode()[1:-1]


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


def _chosen_results(organization):
    """{record id: (chain, created_at text)}: per record, the newest complete result (by
    acceptance) whose layers are all present and verified. A chain is a tuple of
    (digest, media type, size, diffID, created text), base first."""
    org = [organization.pk]
    # Narrow reads rather than one join repeating each layer's columns per use; no ORDER
    # BY, which spills to disk on tens of thousands of rows: grouped here instead.
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
    # these rows describe.
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
    chains = {}
    unusable = set()
    get_layer = layers.get
    for result_id, position, layer_id in links:
        layer = get_layer(layer_id)
        if layer is None:
            unusable.add(result_id)
        elif result_id in chains:
            chains[result_id][position] = layer
        else:
            chains[result_id] = {position: layer}
    chosen = {}
    newest = {}
    for result_id, record_id, created_at, exported_at in results:
        chain = chains.get(result_id)
        if chain is None or result_id in unusable or len(chain) != max(chain) + 1:
            continue
        # SQLite's text drops a zero fraction: pad it so that text order is time order.
        rank = (exported_at if "." in exported_at else exported_at[:-1] + ".000000Z", result_id)
        if record_id not in newest or rank > newest[record_id]:
            newest[record_id] = rank
            chosen[record_id] = (chain, created_at)
    return {
        record_id: (tuple(chain[n] for n in range(len(chain))), created_at)
        for record_id, (chain, created_at) in chosen.items()
    }


def build(organization):
    """(body, record count, layer count) for the stored rows, deterministic. Raises
    InvalidConfig where buildkit's ParseConfig would refuse the config (possible only with
    rows edited by hand), checked as it is written against the rules
    importconfig.check_config states on a finished config."""
    results = _chosen_results(organization)

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
    rows = sorted(  # by digest, then id: deterministic
        (digest, record_id, input_count)
        for record_id, digest, input_count in _query(
            f"SELECT id, digest, input_count FROM {Record._meta.db_table} WHERE organization_id = %s",
            [organization.pk],
        )
        if record_id in needed
    )
    position = {row[1]: n for n, row in enumerate(rows)}

    layer_parts, top_layer = _layers(results)
    record_parts = _records(organization.pk, rows, position, inputs, results, top_layer)
    body = '{"layers":[' + ",".join(layer_parts) + '],"records":[' + ",".join(record_parts) + "]}"
    return body.encode(), len(record_parts), len(layer_parts)


def _layers(results):
    """The layers array as JSON texts, and per record with a result its top layer's index.
    One layer entry per distinct chain prefix; sorting the prefixes puts every parent
    before its children, so parents always point back and never loop."""
    prefixes = {}
    top_prefix = {}
    for record_id, (chain, _) in results.items():
        prefix = ()
        for row in chain:
            prefix += (row[0],)
            if prefix not in prefixes:
                prefixes[prefix] = row
        top_prefix[record_id] = prefix
    order = sorted(prefixes)
    rows = [prefixes[prefix] for prefix in order]
    if not _all_digests([row[0] for row in rows]) or not _all_digests([row[3] for row in rows]):
        from records.digests import is_digest

        bad = next(n for n, row in enumerate(rows) if not is_digest(row[0]) or not is_digest(row[3]))
        raise InvalidConfig(f"layer {bad} lacks a blob digest or diffID")
    index = {prefix: n for n, prefix in enumerate(order)}
    # Digests are checked above; media types (free text from the engine) and the times
    # are escaped only if some of them need it.
    escape = _ESCAPED.search("".join(row[1] for row in rows)) is not None
    parts = []
    for prefix, (digest, media_type, size, diff_id, created_at) in zip(order, rows):
        parent = index[prefix[:-1]] if len(prefix) > 1 else -1
        if escape:
            media_type = _escaped(media_type)
        parts.append(
            f'{{"blob":"{digest}","parent":{parent},"annotations":{{"mediaType":"{media_type}",'
            f'"diffID":"{diff_id}","size":{size},"createdAt":"{created_at}"}}}}'
        )
    return parts, {record_id: index[prefix] for record_id, prefix in top_prefix.items()}


def _records(organization_pk, rows, position, inputs, results, top_layer):
    """The records array as JSON texts, in `rows` order (digest, id)."""
    escape_digests = _ESCAPED.search("".join(row[0] for row in rows)) is not None
    selectors = {selector for entries in inputs.values() for _, selector, _ in entries}
    escape_selectors = _ESCAPED.search("".join(selectors)) is not None
    selector_text = {s: _escaped(s) for s in selectors} if escape_selectors else None
    parts = []
    roots = set()
    # The links written, as record id << shift | source id, for the loop check; the
    # shift fits every id of these rows.
    largest = max((row[1] for row in rows), default=0)
    shift = max(40, largest.bit_length())
    edges = []
    get_position = position.get
    no_inputs = ()
    for n, (digest, record_id, input_count) in enumerate(rows):
        if digest.startswith("random:"):
            raise InvalidConfig(f"record {n} has a random digest")
        text = _escaped(digest) if escape_digests else digest
        entries = inputs.get(record_id, no_inputs) if input_count else no_inputs
        if input_count == 1 and len(entries) == 1 and entries[0][0] == 0 and entries[0][2] in position:
            # Most records: one input, one alternative.
            _, selector, source_id = entries[0]
            edges.append(record_id << shift | source_id)
            if selector_text is not None:
                selector = selector_text[selector]
            head = f'{{"digest":"{text}","inputs":[[{{"selector":"{selector}","link":{position[source_id]}}}]]'
        elif input_count:
            by_index = [[] for _ in range(input_count)]
            for index, selector, source_id in entries:
                link = get_position(source_id)
                if index < input_count and link is not None:
                    by_index[index].append((link, selector))
                    edges.append(record_id << shift | source_id)
            for alternatives in by_index:
                if not alternatives:
                    raise InvalidConfig(f"record {n} has an input without alternatives")
                alternatives.sort()
            if selector_text is not None:
                by_index = [[(link, selector_text[s]) for link, s in alternatives] for alternatives in by_index]
            head = (
                f'{{"digest":"{text}","inputs":['
                + ",".join(
                    "[" + ",".join(f'{{"selector":"{s}","link":{link}}}' for link, s in alternatives) + "]"
                    for alternatives in by_index
                )
                + "]"
            )
        else:
            if digest in roots:
                raise InvalidConfig(f"root digest {digest} appears twice")
            roots.add(digest)
            head = f'{{"digest":"{text}"'
        result = results.get(record_id)
        if result is None:
            parts.append(head + "}")
        else:
            parts.append(f'{head},"layers":[{{"layer":{top_layer[record_id]},"createdAt":"{result[1]}"}}]}}')
    _check_acyclic(organization_pk, frozenset(edges), shift, largest)
    return parts


# Per organization, the links of the last build proven free of loops:
# {organization id: (frozenset of packed links, shift, largest record id)}, a few only.
_acyclic = {}
ACYCLIC_MEMO_ORGS = 4


def _check_acyclic(organization_pk, edges, shift, largest):
    """InvalidConfig unless following the links written always ends.

    Kahn's algorithm over all links costs more than writing the body, so it runs only
    over what is new since the last build proven loop-free (links P, records up to id M)
    when every link not in P starts at a record above M: a loop then lies among records
    above M alone. (A loop wholly at or below M would use only links of P, which has
    none; a loop through a record above M enters it from a record linking to it, by a
    link not in P, which so starts above M too.) That is a fact about the graphs, true
    whatever the ids mean, reused ones included. Otherwise all links are checked."""
    proven = _acyclic.get(organization_pk)
    if proven is not None and proven[1] == shift:
        known, _, known_largest = proven
        new = edges - known
        low = (1 << shift) - 1
        if all(edge >> shift > known_largest for edge in new):
            _kahn([edge for edge in new if edge & low > known_largest], shift)
        else:
            _kahn(edges, shift)
    else:
        _kahn(edges, shift)
    _acyclic.pop(organization_pk, None)
    while len(_acyclic) >= ACYCLIC_MEMO_ORGS:
        _acyclic.pop(next(iter(_acyclic)))
    _acyclic[organization_pk] = (edges, shift, largest)


def _kahn(edges, shift):
    """InvalidConfig unless the links (user << shift | source) have no loop."""
    low = (1 << shift) - 1
    waiting = defaultdict(int)
    users = defaultdict(list)
    nodes = set()
    for edge in edges:
        user, source = edge >> shift, edge & low
        waiting[user] += 1
        users[source].append(user)
        nodes.add(user)
        nodes.add(source)
    queue = [node for node in nodes if not waiting[node]]
    for node in queue:  # grows as it goes
        for user in users[node]:
            waiting[user] -= 1
            if not waiting[user]:
                queue.append(user)
    if len(queue) != len(nodes):
        raise InvalidConfig(f"{len(nodes) - len(queue)} records are in or behind a loop")
