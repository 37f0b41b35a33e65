"""records.importbody writes the /import body as text: it must be byte for byte what
orjson.dumps gives for the config, built here the plain way (ORM rows, dicts), over a
sequence of changes."""

import orjson
from django.db import connection

from accounts.models import Organization
from blobs.models import Blob
from records import eviction, importbody, services
from records.models import Layer, Record, RecordInput, Result, ResultLayer
from tests.buildkit_oracle import descriptor, key, link, output_key, post_layers, random_key_id, result, sha, store_blob
from tests.test_import import IMAGE, export


def utc_text(moment):
    """The RFC 3339 text the build reads from each database (SQLite keeps Django's
    isoformat, which drops a zero fraction)."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if connection.vendor == "postgresql" or moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


def reference(org):
    """The config built straightforwardly from the ORM: the rules of importconfig's
    docstring, without any of the build's shortcuts."""
    verified = {(b.digest, b.size) for b in Blob.objects.filter(organization=org, state="verified")}
    usable = {layer.id: layer for layer in Layer.objects.filter(organization=org) if (layer.digest, layer.size) in verified}
    chosen = {}
    for res in Result.objects.filter(record__organization=org, complete=True).order_by("exported_at", "id"):
        links = sorted(ResultLayer.objects.filter(result=res), key=lambda rl: rl.position)
        if not links or [rl.position for rl in links] != list(range(len(links))):
            continue
        if any(rl.layer_id not in usable for rl in links):
            continue
        chosen[res.record_id] = (res, [usable[rl.layer_id] for rl in links])  # the newest wins
    inputs = {}
    for entry in RecordInput.objects.filter(organization=org):
        inputs.setdefault(entry.record_id, []).append(entry)
    needed, todo = set(chosen), list(chosen)
    while todo:
        for entry in inputs.get(todo.pop(), []):
            if entry.source_id not in needed:
                needed.add(entry.source_id)
                todo.append(entry.source_id)
    records = sorted(Record.objects.filter(organization=org, id__in=needed), key=lambda r: (r.digest, r.id))
    position = {record.id: n for n, record in enumerate(records)}
    prefixes = {}
    for _, chain in chosen.values():
        for n, layer in enumerate(chain):
            prefixes.setdefault(tuple(item.digest for item in chain[: n + 1]), layer)
    order = sorted(prefixes)
    index = {prefix: n for n, prefix in enumerate(order)}
    config = {"layers": [], "records": []}
    for prefix in order:
        layer = prefixes[prefix]
        config["layers"].append(
            {
                "blob": layer.digest,
                "parent": index[prefix[:-1]] if len(prefix) > 1 else -1,
                "annotations": {
                    "mediaType": layer.media_type,
                    "diffID": layer.diff_id,
                    "size": layer.size,
                    "createdAt": utc_text(layer.created_at),
                },
            }
        )
    for record in records:
        entry = {"digest": record.digest}
        if record.input_count:
            by_index = [[] for _ in range(record.input_count)]
            for source in inputs.get(record.id, []):
                if source.index < record.input_count and source.source_id in position:
                    by_index[source.index].append((position[source.source_id], source.selector))
            entry["inputs"] = [[{"selector": s, "link": n} for n, s in sorted(alts)] for alts in by_index]
        if record.id in chosen:
            top = tuple(layer.digest for layer in chosen[record.id][1])
            entry["layers"] = [{"layer": index[top], "createdAt": utc_text(chosen[record.id][0].created_at)}]
        config["records"].append(entry)
    return config


_last = {}


def assert_same(org, changed=True):
    """The build equals the plain one, and (unless told) differs from the last step's:
    each change must show, or the comparison proves little."""
    body, records, layers = importbody.build(org)
    expected = reference(org)
    assert body == orjson.dumps(expected)
    assert (records, layers) == (len(expected["records"]), len(expected["layers"]))
    assert (_last.get(org.pk) != body) is changed
    _last[org.pk] = body
    return expected


def test_the_body_matches_a_plain_build_over_a_sequence_of_changes(client, org, token, other_org, other_token):
    _last.clear()
    ids = [random_key_id() for _ in range(8)]
    selectors = [sha("s0"), "", sha("s2"), "", sha("s4"), "", "", ""]
    keys = [key(IMAGE, result("img"))] + [key(i, result(f"r{n}")) for n, i in enumerate(ids)]
    links = [
        link(i, IMAGE if n == 0 else ids[n - 1], 0, output_key(sha(f"op {n}")), selectors[n]) for n, i in enumerate(ids)
    ]
    # Two inputs with two alternatives each on the last key.
    links += [
        link(ids[7], ids[2], 1, output_key(sha("op 7")), sha("b")),
        link(ids[7], ids[3], 1, output_key(sha("op 7")), sha("a")),
    ]
    chains = {f"r{n}": ["base", f"l{n}"] for n in range(6)} | {"img": ["base"]}
    export(client, org, token, keys, links, chains)
    export(client, other_org, other_token, keys, links, chains)
    assert len(assert_same(org)["records"]) == 7

    # Selectors edited by hand into text orjson must escape, and non-ASCII text.
    edited = RecordInput.objects.filter(organization=org).exclude(selector="").order_by("id")
    for entry, text in zip(edited, ['sel "quoted"', "back\\slash\ttab\nline", "\u03bb/path"]):
        RecordInput.objects.filter(pk=entry.pk).update(selector=text)
    assert '\\"quoted\\"' in orjson.dumps(assert_same(org)).decode()

    # Results added: the remaining keys, one with a media type needing escapes.
    store_blob(org, sha("odd"), 3)
    digest = Record.objects.get(organization=org, digest=output_key(sha("op 6"))).identity
    body = post_layers(client, token, [{"RecordDigest": digest, "Layers": [descriptor(sha("odd"), 3, media_type='x"\u00e9\x01')]}])
    assert body.json()["Refused"] == []
    assert "\\u0001" in orjson.dumps(assert_same(org)).decode()

    # A newer result for a record that has one replaces it.
    store_blob(org, sha("newer"), 5)
    digest = Record.objects.get(organization=org, digest=IMAGE).identity
    post_layers(client, token, [{"RecordDigest": digest, "Layers": [descriptor(sha("newer"), 5)]}])
    assert_same(org)

    # Blobs lost: every result using "base" drops out.
    services.blobs_lost(org, [sha("base")])
    Blob.objects.filter(organization=org, digest=sha("base")).delete()
    assert_same(org)

    # Results evicted.
    eviction.evict_results(org, list(Result.objects.filter(record__organization=org, complete=True).values_list("id", flat=True)[:1]))
    assert_same(org)

    # Another organization deleted with its records: this one's body is unchanged.
    Organization.objects.filter(pk=other_org.pk).delete()
    assert not Record.objects.filter(organization_id=other_org.pk).exists()
    assert_same(org, changed=False)


def test_the_loop_check_after_a_proven_build_still_finds_loops():
    """The check runs over new links only when every new link starts above the records
    proven before; loops among new records, or through old ones, are still found."""
    import pytest

    def packed(*links):
        return frozenset(user << 40 | source for user, source in links)

    org_pk = -1  # no organization: the memo is keyed by any id
    importbody._acyclic.pop(org_pk, None)
    importbody._check_acyclic(org_pk, packed((2, 1), (3, 2)), 40, 3)
    # New records 4 and 5 link to old ones and to each other without a loop: fine.
    importbody._check_acyclic(org_pk, packed((2, 1), (3, 2), (4, 3), (5, 4)), 40, 5)
    # A loop between new records 6 and 7.
    with pytest.raises(importbody.InvalidConfig, match="loop"):
        importbody._check_acyclic(org_pk, packed((2, 1), (3, 2), (4, 3), (5, 4), (6, 7), (7, 6)), 40, 7)
    # A failed check proves nothing: the memo still holds the last good links, and an
    # old record linking to a new one (1 -> 6, 6 -> 3 -> 2 -> 1) is caught.
    with pytest.raises(importbody.InvalidConfig, match="loop"):
        importbody._check_acyclic(org_pk, packed((2, 1), (3, 2), (6, 3), (1, 6)), 40, 6)
    # A loop among old records whose links changed (hand edits).
    with pytest.raises(importbody.InvalidConfig, match="loop"):
        importbody._check_acyclic(org_pk, packed((2, 1), (1, 2)), 40, 5)
    importbody._acyclic.pop(org_pk, None)
