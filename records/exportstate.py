"""An engine's unchanged /records post, answered from what its last analysis derived.

An engine posts its whole key graph every export period (PROTOCOL.md, "Export, as the
engine does it"), and between two periods it is mostly byte for byte the same. The
analysis of a body depends on the body and on which of its records have a result; the
latter changes only with ImportSnapshot.generation (records.services.mark_changed is
called by every change of Record.has_result, and records are deleted only with their
organization). So a body equal to the engine's last one, with the generation unchanged
since, would be analysed into the same records, the same rows and the same counters:
what is left to do is the export bookkeeping for the few records still lacking a
result, kept in one small row per engine (EngineExportState).
"""

import hashlib
from datetime import datetime

from django.utils import timezone

from records.graph import KeyResult
from records.models import EngineExportState, ImportSnapshot

# Past this many records waiting for a result the state is not kept (the row must stay
# small with a thousand engines); such a post is analysed every time, and it is a post
# whose exports deliver results, bumping the generation anyway.
MAX_WANTED = 1000


def fingerprint(raw):
    return hashlib.sha256(raw).hexdigest()


def generation(organization):
    """The organization's ImportSnapshot.generation, 0 before its first change."""
    return ImportSnapshot.objects.filter(organization=organization).values_list("generation", flat=True).first() or 0


class Remembered:
    """The parts of a records.graph.Graph that answering the post again needs."""

    def __init__(self, state):
        self._stats = state.stats
        self.key_count = state.stats.get("keys", 0)
        self.dropped = {
            name[len("dropped[") : -1]: n for name, n in state.stats.items() if name.startswith("dropped[")
        }
        self.shared = state.shared
        self.results = {}
        self.rows = {}
        for record_id, identity, ref_id, created_at, description in state.wanted:
            self.results[identity] = KeyResult(ref_id, datetime.fromisoformat(created_at), description)
            self.rows[identity] = (record_id, False)

    def stats(self):
        return dict(self._stats)


def recall(organization, token, engine_ref, digest):
    """Remembered for this engine's post with body fingerprint `digest`, or None when it
    must be analysed (another body, or a result changed in the organization since)."""
    state = EngineExportState.objects.filter(token=token, engine_ref=engine_ref or 0, body_digest=digest).first()
    if state is None or state.generation != generation(organization):
        return None
    return Remembered(state)


def remember(token, engine_ref, digest, generation_seen, graph, rows, shared):
    """Keep what the analysis of this post derived; `generation_seen` was read before its
    rows were, so a change committed in between makes the next post analyse again."""
    if token is None:
        return
    wanted = [
        [rows[identity][0], identity, graph.results[identity].ref_id,
         graph.results[identity].created_at.isoformat(), graph.results[identity].description]
        for identity in graph.results
        if not rows[identity][1]
    ]
    if len(wanted) > MAX_WANTED:
        EngineExportState.objects.filter(token=token, engine_ref=engine_ref or 0).delete()
        return
    EngineExportState.objects.update_or_create(
        token=token,
        engine_ref=engine_ref or 0,
        defaults={
            "body_digest": digest,
            "generation": generation_seen,
            "wanted": wanted,
            "stats": graph.stats(),
            "shared": shared,
            "updated_at": timezone.now(),
        },
    )
