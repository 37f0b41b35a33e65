"""The record rows an organization's last /records posts mapped, kept in this process.

Each post maps every identity of its graph to (id, has_result): one indexed lookup of
tens of thousands of identities, most of them the same as in the previous post. A row's
id never changes (records are deleted only with their organization) and has_result only
with ImportSnapshot.generation (records.services.mark_changed), so rows read at one
generation answer for the same organization as long as the generation is unchanged; a
post then looks up only the identities it adds. Bounded: a few organizations, each up to
MAX_ROWS rows; entries are written only once the rows they hold are committed.
"""

import threading
from collections import OrderedDict

MAX_ORGANIZATIONS = 4
MAX_ROWS = 250_000

_lock = threading.Lock()
# organization pk -> (generation, {identity: (id, has_result)}), most recent last
_memo = OrderedDict()


def known(organization_id, generation, identities):
    """({identity: row} known for `identities` at `generation`, [identities not known])."""
    with _lock:
        entry = _memo.get(organization_id)
        if entry is not None:
            _memo.move_to_end(organization_id)
    if entry is None or entry[0] != generation:
        return {}, list(identities)
    rows_known = entry[1]
    rows = {}
    missing = []
    for identity in identities:
        row = rows_known.get(identity)
        if row is None:
            missing.append(identity)
        else:
            rows[identity] = row
    return rows, missing


def remember(organization_id, generation, rows):
    """Keep `rows`, read (after `generation` was) in a transaction that has committed."""
    with _lock:
        entry = _memo.get(organization_id)
        kept = entry[1] if entry is not None and entry[0] == generation else {}
        if len(kept) + len(rows) > MAX_ROWS:
            kept = {}
        if len(rows) > MAX_ROWS:
            _memo.pop(organization_id, None)
            return
        kept.update(rows)
        _memo[organization_id] = (generation, kept)
        _memo.move_to_end(organization_id)
        while len(_memo) > MAX_ORGANIZATIONS:
            _memo.popitem(last=False)


def forget_all():
    with _lock:
        _memo.clear()
