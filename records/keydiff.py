"""An engine's /records post analysed over only what changed since its previous one.

An engine posts its whole key graph every export period and most of it is what it posted
last time. The analysis of a key (records.graph.settle) depends only on its own entry,
its own links, which key IDs the payload holds, and the outcome for the keys it links to.
So, given the engine's previous body and the outcome of its analysis (records.exportmemo),
a key needs analysing again only when its entry or its links differ, when a key it links
to appeared or disappeared, or when it links to a key that needs analysing again; every
other key keeps its previous identity or reason. The result is the Graph a full analysis
of the body gives (tests/test_keydiff.py checks that over random edits), except that
records kept from before carry None instead of their digest and inputs: they were stored
by the earlier post.

Anything unusual (repeated key IDs, an entry that is not an object, a changed link that
does not parse, a previous state that does not fit) answers None, and the caller analyses
the body in full: that path also words the 400 for a malformed body.
"""

from records import graph as graphlib
from records.graph import DEFECT_LOOP, DROP_RANDOM, DROP_UNREACHABLE, Graph, PayloadError


def _link_groups(links_in):
    """{key ID: [its link objects, in body order]}, or None for a link that is not an
    object with a hashable ID or whose Input is not an int (True == 1 and 1.0 == 1 in
    Python, so an equal-looking link must also be of the type that passed before)."""
    groups = {}
    try:
        for link in links_in:
            if type(link.get("Input", 0)) is not int:
                return None
            group = groups.get(link["ID"])
            if group is None:
                groups[link["ID"]] = [link]
            else:
                group.append(link)
    except (AttributeError, KeyError, TypeError):
        return None
    return groups


class Index:
    """A body's CacheKeys objects by key ID and its links grouped by key ID: what the
    next post is compared with (records.exportmemo keeps it)."""

    def __init__(self, entries, groups):
        self.entries = entries
        self.groups = groups

    def body(self):
        """A body with the same analysis (only the order of links within a key matters)."""
        return {"CacheKeys": list(self.entries.values()), "Links": [l for g in self.groups.values() for l in g]}


def index(body):
    """The Index of a decoded /records body, or None when its key IDs repeat (parse_keys
    merges repeated IDs; comparing them entry by entry would not) or an entry is not an
    object: such a body is analysed in full, which also words the 400."""
    keys_in = body.get("CacheKeys")
    links_in = body.get("Links")
    if not isinstance(keys_in or [], list) or not isinstance(links_in or [], list):
        return None
    try:
        entries = {entry["ID"]: entry for entry in keys_in or ()}
    except (KeyError, TypeError):
        return None
    if len(entries) != len(keys_in or ()):
        return None
    groups = _link_groups(links_in or ())
    return None if groups is None else Index(entries, groups)


class Previous:
    """What the engine's previous post left: its body's fingerprint, the identities and
    drop reasons its analysis gave, and loaders of its Index's two halves (each as large
    as a share of the decoded body: decoded only to be compared, one after the other)."""

    def __init__(self, digest, identities, reasons, load_entries, load_groups):
        self.digest = digest
        self.identities = identities
        self.reasons = reasons
        self.entries = load_entries
        self.groups = load_groups


def _changed(index, previous, same_body):
    """Key IDs to analyse again, before their dependants are added, or None."""
    if same_body:
        return set()
    entries, groups = index.entries, index.groups
    old_entries = previous.entries()
    if old_entries is None:
        return None
    changed = {key_id for key_id, entry in entries.items() if old_entries.get(key_id) != entry}
    # A key gone: keys linking to it now dangle.
    changed.update(key_id for key_id in old_entries if key_id not in entries)
    del old_entries
    old_groups = previous.groups()
    if old_groups is None:
        return None
    changed.update(key_id for key_id, group in groups.items() if old_groups.get(key_id) != group)
    changed.update(key_id for key_id in old_groups if key_id not in groups)
    return changed


# Keys linking to the changed ones are found by scanning the links this many times (a
# few new keys at the edge of the graph have no dependants), then by an index of them all.
SCANS = 2


def _with_dependants(seeds, links_in, groups):
    dirty = set(seeds)
    frontier = dirty
    for _ in range(SCANS):
        found = {link["ID"] for link in links_in if link["LinkedID"] in frontier} - dirty
        if not found:
            return dirty
        dirty |= found
        frontier = found
    linked_by = {}
    for key_id, group in groups.items():
        for link in group:
            linked_by.setdefault(link["LinkedID"], []).append(key_id)
    stack = list(frontier)
    while stack:
        for dependant in linked_by.get(stack.pop(), ()):
            if dependant not in dirty:
                dirty.add(dependant)
                stack.append(dependant)
    return dirty


def analyse_changes(body, index, previous, same_body=False):
    """The Graph of `body` (the decoded /records object, with its Index), analysing
    only the keys that changed since `previous` (a Previous; `same_body`: the bytes are
    the previous ones), or None when that cannot be told: then analyse in full. Raises
    PayloadError as records.graph.parse_payload does."""
    keys_in = graphlib._field(body, "CacheKeys", list, "body", [])
    links_in = graphlib._field(body, "Links", list, "body", [])
    groups = index.groups
    changed = _changed(index, previous, same_body)
    if changed is None:
        return None
    # Links not seen before are checked as parse_payload checks every link (those seen
    # before passed), whether or not their key is in the payload.
    try:
        for key_id in changed:
            for link in groups.get(key_id, ()):
                graphlib.parse_link(link, 0)
    except PayloadError:
        return None  # worded by the full path, with the link's position
    entries = index.entries
    dirty = _with_dependants(changed, links_in, groups) if changed else set()
    # Only the entries analysed again are parsed: the others are equal to entries the
    # previous post's parse accepted, and gather reads theirs only when asked.
    try:
        part = graphlib.parse_keys([entries[key_id] for key_id in dirty if key_id in entries])
    except PayloadError:
        graphlib.parse_keys(keys_in)  # raises it again, worded with the entry's position
        raise

    graph = Graph(key_count=len(entries), link_count=len(links_in))
    graph.unknown_link_ids = sum(len(groups[key_id]) for key_id in groups.keys() - entries.keys())
    poisoned = set()
    looped = set()
    old_identities, old_reasons = previous.identities, previous.reasons
    for key_id in entries:
        if key_id in dirty:
            continue
        identity = old_identities.get(key_id)
        if identity is not None:
            graph.identities[key_id] = identity
            graph.records.setdefault(identity, None)
            continue
        reason = old_reasons.get(key_id)
        if reason is None:
            return None  # a state that does not fit this body
        graph.reasons[key_id] = reason
        if reason == DEFECT_LOOP:
            looped.add(key_id)
        elif reason not in (DROP_RANDOM, DROP_UNREACHABLE):
            poisoned.add(key_id)

    links = [graphlib.parse_link(link, 0) for key_id in part for link in groups.get(key_id, ())]
    graphlib.settle(graph, part, links, entries, poisoned, looped)
    graphlib.gather(graph, part, entries)
    return graph
