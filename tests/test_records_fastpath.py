"""/records answered from the engine's stored export state (records.exportstate) must be
what a full analysis answers: the same ExportRecords, rows and counters, and a post after
any change of the organization's results, or with another body, is analysed again."""

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from activity.models import Activity
from records import eviction, exportmemo, exportstate, keydiff, graph as graphlib
from records.models import EngineExportState, PendingExport, Record, RecordInput, Result
from records.services import blobs_lost
from tests.buildkit_oracle import (
    descriptor,
    key,
    link,
    output_key,
    post_layers,
    post_records,
    random_key_id,
    result,
    root_key,
    sha,
    store_blob,
)
from tests.support import engine_request

IMAGE = root_key(sha("docker-image://alpine"))


def build():
    ids = [random_key_id(), random_key_id(), random_key_id()]
    keys = [key(IMAGE, result("ref-image"))] + [key(i, result(f"ref-{n}")) for n, i in enumerate(ids)]
    links = [
        link(ids[0], IMAGE, 0, output_key(sha("exec a"))),
        link(ids[1], ids[0], 0, output_key(sha("exec b"))),
        link(ids[2], ids[1], 0, output_key(sha("copy c")), sha("selector")),
        link(ids[2], IMAGE, 1, output_key(sha("copy c"))),
    ]
    return keys, links


class Analyses:
    """Counts full analyses (records.graph.analyse) and analyses of only what changed
    (records.keydiff): a recalled post makes neither."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self.diffed = 0
        real, real_diff = graphlib.analyse, keydiff.analyse_changes

        def counted(payload):
            self.calls += 1
            return real(payload)

        def diffed(*args, **kwargs):
            graph = real_diff(*args, **kwargs)
            self.diffed += graph is not None
            return graph

        monkeypatch.setattr(graphlib, "analyse", counted)
        monkeypatch.setattr(keydiff, "analyse_changes", diffed)

    def kind(self, before):
        calls, diffed = before
        return "full" if self.calls > calls else "diffed" if self.diffed > diffed else "recalled"

    def mark(self):
        return self.calls, self.diffed


def counters(org):
    rows = Activity.objects.filter(organization=org).values_list("name").annotate(n=Sum("value"))
    return {name: n for name, n in rows if not name.startswith("engine_request")}


def deliver(client, org, token, digests, tag):
    for n, digest in enumerate(digests):
        store_blob(org, sha(f"{tag} {digest}"), 3)
    answer = post_layers(
        client, token, [{"RecordDigest": d, "Layers": [descriptor(sha(f"{tag} {d}"), 3)]} for d in digests]
    )
    assert sorted(answer.json()["Accepted"]) == sorted(digests)


def scenario(client, org, tokens, recall, analyses, django_capture_on_commit_callbacks):
    """One engine's export periods, with every kind of change in between. With `recall`
    False the stored state and the export memo are dropped before each post, so every
    post is analysed in full."""
    token, other = tokens
    keys, links = build()
    answers = []
    recalled = []

    def post(body_keys=keys, body_links=links, with_token=token):
        if not recall:
            EngineExportState.objects.all().delete()
            exportmemo.forget_all()
        before = analyses.mark()
        with django_capture_on_commit_callbacks(execute=True):
            response = post_records(client, with_token, body_keys, body_links)
        assert response.status_code == 200, response.content
        recalled.append(analyses.kind(before))
        answers.append(sorted((e["Digest"], e["CacheRefID"]) for e in response.json()["ExportRecords"]))
        return answers[-1]

    org.export_timeout = 60
    org.save(update_fields=["export_timeout"])
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        assert len(post()) == 4  # first post: every result asked for
        assert post() == []  # asked a moment ago: the export may be running
        traveller.shift(timedelta(seconds=61))
        asked = post()  # that export is over: asked again
        assert len(asked) == 4
        # The other engine delivers two of them: those are not asked for any more.
        deliver(client, org, other, [d for d, _ in asked[:2]], "first")
        traveller.shift(timedelta(seconds=61))
        assert post() == asked[2:]
        traveller.shift(timedelta(seconds=61))
        assert post() == asked[2:]
        deliver(client, org, token, [d for d, _ in asked[2:]], "second")
        assert post() == []
        assert post() == []
        # A blob lost: its record is asked for again.
        blobs_lost(org, [sha(f"first {asked[0][0]}")])
        assert post() == [asked[0]]
        traveller.shift(timedelta(seconds=61))
        assert post() == [asked[0]]
        deliver(client, org, token, [asked[0][0]], "third")
        assert post() == []
        # An evicted result: asked for again.
        record_id = Record.objects.get(organization=org, identity=asked[3][0]).pk
        eviction.evict_results(org, list(Result.objects.filter(record_id=record_id).values_list("pk", flat=True)))
        assert post() == [asked[3]]
        # One key changed (a new result on the image): analysed, its new ref asked for.
        changed = [dict(keys[0], Results=[result("ref-image-2", "2026-11-28T10:00:00Z")])] + keys[1:]
        traveller.shift(timedelta(seconds=61))
        assert (asked[3][0], asked[3][1]) in post(changed)
        assert post(changed) == []
        # Another engine posting the same body has no state of its own yet.
        post(changed, with_token=other)
        post(changed, with_token=other)
        post(changed)
    return answers, recalled


def test_recalled_posts_answer_what_a_full_analysis_answers(
    client, org, other_org, builtin, monkeypatch, django_capture_on_commit_callbacks
):
    from accounts.models import EngineToken

    analyses = Analyses(monkeypatch)
    fast_tokens = [EngineToken.issue(org, label=f"e{n}")[1] for n in range(2)]
    full_tokens = [EngineToken.issue(other_org, label=f"e{n}")[1] for n in range(2)]
    fast, recalled = scenario(client, org, fast_tokens, True, analyses, django_capture_on_commit_callbacks)
    full, analysed = scenario(client, other_org, full_tokens, False, analyses, django_capture_on_commit_callbacks)
    assert fast == full
    assert counters(org) == counters(other_org)
    assert counters(org)["shared_steps"] > 0
    assert set(analysed) == {"full"}
    # Recalled: each unchanged body with no result changed since its last analysis;
    # otherwise only what changed since the engine's last post is analysed.
    assert recalled == [
        "full", "recalled", "recalled",  # first post, then the same body twice
        "diffed", "recalled",  # after /layers
        "diffed", "recalled",  # after /layers
        "diffed", "recalled",  # after blobs lost
        "diffed",  # after /layers
        "diffed",  # after the eviction
        "diffed", "recalled",  # a key changed
        "full", "recalled",  # the other engine: its own state
        "recalled",  # the first engine again: its state is still current
    ]
    this, other = org, other_org
    assert Record.objects.filter(organization=this).count() == Record.objects.filter(organization=other).count()
    assert RecordInput.objects.filter(organization=this).count() == RecordInput.objects.filter(
        organization=other
    ).count()
    assert sorted(PendingExport.objects.filter(record__organization=this).values_list("cache_ref_id", flat=True)) == sorted(
        PendingExport.objects.filter(record__organization=other).values_list("cache_ref_id", flat=True)
    )


@pytest.mark.parametrize(
    "raw, message",
    [
        (b'{"CacheKeys": [{"ID": ""}]}', "CacheKeys[0].ID must be a non-empty string without NUL characters"),
        (b'{"CacheKeys": [], "Links": [{"ID": "a", "LinkedID": "b", "Input": "0"}]}', "Links[0].Input must be an integer"),
        (b"[]", "request body must be a JSON object"),
        (b'{"CacheKeys": [', "malformed JSON"),
    ],
)
def test_bad_bodies_are_refused_every_time(client, org, token, raw, message):
    keys, links = build()
    assert post_records(client, token, keys, links).status_code == 200
    for _ in range(2):  # a refused body is never remembered
        response = engine_request(client, "POST", "/magicache/records", token, raw=raw)
        assert response.status_code == 400
        assert response.json()["error"].startswith(message)
    assert not EngineExportState.objects.filter(body_digest=exportstate.fingerprint(raw)).exists()


def test_a_long_wait_for_results_is_not_kept(client, org, token, monkeypatch):
    """The state row stays small: past MAX_WANTED records waiting, the post is analysed."""
    monkeypatch.setattr(exportstate, "MAX_WANTED", 2)
    keys, links = build()
    assert post_records(client, token, keys, links).status_code == 200
    assert not EngineExportState.objects.exists()
    monkeypatch.setattr(exportstate, "MAX_WANTED", 4)
    assert post_records(client, token, keys, links).status_code == 200
    assert len(EngineExportState.objects.get().wanted) == 4


def test_rows_mapped_at_the_same_generation_are_not_looked_up_again(
    client, org, token, builtin, monkeypatch, django_capture_on_commit_callbacks
):
    from records import bulk

    looked_up = []
    real = bulk.records_by_identity

    def counted(organization_id, identities):
        looked_up.append(len(list(identities)))
        return real(organization_id, identities)

    monkeypatch.setattr(bulk, "records_by_identity", counted)
    keys, links = build()
    with django_capture_on_commit_callbacks(execute=True):
        first = post_records(client, token, keys, links).json()["ExportRecords"]
    # The graph, then the rows inserted, unless the insert returned their ids.
    returned = connection.vendor == "postgresql"
    assert len(first) == 4 and looked_up == ([4] if returned else [4, 4])
    new_id = random_key_id()
    grown_keys, grown_links = keys + [key(new_id, result("ref-new"))], links + [
        link(new_id, IMAGE, 0, output_key(sha("exec new")))
    ]
    looked_up.clear()
    with django_capture_on_commit_callbacks(execute=True):
        grown = post_records(client, token, grown_keys, grown_links).json()["ExportRecords"]
    assert looked_up == ([1] if returned else [1, 1])  # only the new record's identity
    assert [e["CacheRefID"] for e in grown] == ["ref-new"]
    # A result delivered: the generation moved, every row is read again.
    deliver(client, org, token, [e["Digest"] for e in first], "layer")
    looked_up.clear()
    grown_keys.append(key(random_key_id(), result("ref-newer")))
    with django_capture_on_commit_callbacks(execute=True):
        after = post_records(client, token, grown_keys, grown_links).json()["ExportRecords"]
    assert looked_up == [5]
    assert after == []  # the new key has no links and a random ID: not a record
