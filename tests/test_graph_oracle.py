"""Randomized multi-engine exports through the real endpoints, checked against an
independent model of buildkit's import (tests/buildkit_oracle.py)."""

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import EngineToken, Organization
from tests.buildkit_oracle import (
    Engine,
    Op,
    ImportedCache,
    closure,
    descriptor,
    edges_of,
    get_import,
    importable,
    link,
    make_world,
    matches,
    mutations,
    output_key,
    post_layers,
    post_records,
    sha,
    store_blob,
)

_orgs = itertools.count()

DEFECTS = ["dangling", "disagreeing", "bad digest", "loop", "self loop"]


def _new_org():
    org = Organization.ensure(f"oracle-{next(_orgs)}")
    return org, EngineToken.issue(org)[1]


def _inject(engine, kind, rng, keys, links):
    """Damage one non-root key of a payload; return the damaged key IDs."""
    dependent = [k for k in engine.keys.values() if k.inputs]
    if not dependent:
        return set()
    target = rng.choice(dependent)
    op, output = target.edge
    digest = output_key(op.digest, output)
    if kind == "dangling":
        links.append(link(target.id, "no-such-key-in-payload", 0, digest))
    elif kind == "disagreeing":
        links.append(link(target.id, target.inputs[0][0][0].id, 0, sha("another digest")))
    elif kind == "bad digest":
        for entry in links:
            if entry["ID"] == target.id:
                entry["Digest"] = "sha256:not-hex"
                break
    elif kind == "loop":
        users = [k for k in engine.keys.values() if any(src is target for alts in k.inputs for src, _ in alts)]
        other = rng.choice(users) if users else target
        links.append(link(target.id, other.id, 0, digest))
    else:
        links.append(link(target.id, target.id, 0, digest))
    return {target.id}


def _dependants(engine, damaged):
    """Keys that depend, through any alternative, on a damaged key."""
    affected = set(damaged)
    changed = True
    while changed:
        changed = False
        for k in engine.keys.values():
            if k.id not in affected and any(src.id in affected for alts in k.inputs for src, _ in alts):
                affected.add(k.id)
                changed = True
    return affected


def _export(client, org, token, engine, rng, defect=None, skip_rate=0.0):
    """One export round of an engine: /records, upload, /layers. Returns what was delivered
    {ref id: chain} and the refs we were asked for."""
    keys, links = engine.payload(rng)
    affected = set()
    if defect:
        affected = _dependants(engine, _inject(engine, defect, rng, keys, links))
    response = post_records(client, token, keys, links)
    assert response.status_code == 200, response.content
    asked = response.json()["ExportRecords"]
    refs = engine.by_ref()
    cache = {}
    delivered = {}
    updated = []
    for entry in asked:
        engine_key = refs[entry["CacheRefID"]]
        assert engine_key.id not in affected, "asked to export a key of a malformed part of the graph"
        assert importable(engine_key, cache), "asked to export a key no import could ever find"
        if rng.random() < skip_rate:
            continue  # a pruned ref: the engine skips it silently
        chain = engine_key.result[1]
        for blob, size in chain:
            store_blob(org, blob, size)
        updated.append({"RecordDigest": entry["Digest"], "Layers": [descriptor(b, s) for b, s in chain]})
        delivered[entry["CacheRefID"]] = engine_key
    if updated:
        answer = post_layers(client, token, updated)
        assert answer.status_code == 200, answer.content
        assert answer.json()["Refused"] == []
    assert len({e["Digest"] for e in asked}) == len(asked)
    return delivered, affected


def _check(config, fleet, delivered, world, rng, affected=(), all_delivered=False):
    cache = ImportedCache(config)  # raises ParseFailure where the engine would
    # 3. malformed parts are dropped, the valid part stays importable: with every asked
    # ref delivered, every sound key with a result is found.
    if all_delivered:
        for engine in fleet.values():
            sound = {}
            for engine_key in engine.keys.values():
                if engine_key.result and engine_key.id not in affected and importable(engine_key, sound):
                    assert cache.lookup(engine.query(engine_key)), "a sound key with a result is not importable"
    blobs_of = {tuple(b for b, _ in k.result[1]): k for k in delivered}
    expected = set(blobs_of)
    assert len(blobs_of) == len(delivered)
    # 1. every exported result is found from the root keys, with the chain uploaded for it
    for engine_key in delivered:
        query = delivered[engine_key].query(engine_key)
        found = cache.lookup(query)
        assert tuple(b for b, _ in engine_key.result[1]) in found, "an exported result is not found"
    # 2. no wrong hits; and whatever a delivered key matches is found
    queries = set()
    for engine in fleet.values():
        for engine_key in engine.keys.values():
            query = engine.query(engine_key)
            queries.add(query)
            queries.update(mutations(query, world, rng))
    for query in queries:
        found = cache.lookup(query)
        for chain in found:
            assert chain in expected, "a result that nobody uploaded"
            assert matches(blobs_of[chain], query), f"wrong hit for {query}"
        if any(matches(k, query) for k in delivered):
            assert found, "a delivered result that matches is not found"


@pytest.mark.django_db
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rng=st.randoms(use_true_random=False),
    engines=st.integers(1, 3),
    ops=st.integers(2, 14),
    digests=st.integers(1, 5),
    roots=st.integers(1, 4),
    random_roots=st.integers(0, 2),
    defect=st.sampled_from([None, None] + DEFECTS),
    skip_rate=st.sampled_from([0.0, 0.0, 0.3]),
)
def test_exports_import_as_buildkit_finds_them(client, rng, engines, ops, digests, roots, random_roots, defect, skip_rate):
    org, token = _new_org()
    world = make_world(rng, digests=digests, roots=roots, ops=ops, random_roots=random_roots)
    all_edges = edges_of(world)
    fleet = {}
    delivered = {}
    affected = set()
    for n in range(engines):
        built = closure(rng.sample(all_edges, rng.randint(1, len(all_edges))))
        engine = Engine(f"e{n}", world, built, rng)
        got, damaged = _export(client, org, token, engine, rng, defect=defect if n == 0 else None, skip_rate=skip_rate)
        affected |= damaged
        for engine_key in got.values():
            delivered[engine_key] = engine
        fleet[engine.name] = engine
    config = get_import(client, token)
    _check(config, fleet, delivered, world, rng, affected, all_delivered=skip_rate == 0)
    # An unchanged graph posted again asks for nothing new and changes nothing.
    before = get_import(client, token)
    for engine in fleet.values():
        keys, links = engine.payload(rng)
        response = post_records(client, token, keys, links)
        asked = {e["CacheRefID"] for e in response.json()["ExportRecords"]}
        assert not asked & {k.result[0] for k in delivered}
    assert get_import(client, token) == before


@pytest.mark.django_db
@pytest.mark.parametrize("defect", [None] + DEFECTS)
def test_every_dimension_of_a_lookup_counts(client, defect):
    """One digest on other inputs, selectors, output indexes, alternatives and a random
    root, built by two engines: each variant is its own record, found only by itself."""
    import random

    rng = random.Random(7)
    org, token = _new_org()
    image = Op(sha("image"), outputs=2)
    other = Op(sha("other image"))
    noise = Op("random:" + "5" * 64)
    step = sha("exec step")
    world = [image, other, noise]
    for src, sel in [((image, 0), ""), ((image, 0), sha("selector a")), ((image, 1), ""), ((other, 0), ""), ((noise, 0), "")]:
        world.append(Op(step, outputs=2, inputs=(((src, sel),),)))
    world.append(Op(sha("merge"), inputs=((((world[3], 0), ""), ((world[6], 1), "")), (((image, 0), ""),))))
    world.append(Op(sha("after noise"), inputs=((((world[7], 0), ""), ((world[3], 1), "")),)))
    fleet, delivered, affected = {}, {}, set()
    for n in range(2):
        engine = Engine(f"e{n}", world, closure(edges_of(world)), rng, result_rate=1.0, drop_alternatives=0.0)
        got, damaged = _export(client, org, token, engine, rng, defect=defect if n == 0 else None)
        affected |= damaged
        delivered.update({k: engine for k in got.values()})
        fleet[engine.name] = engine
    _check(get_import(client, token), fleet, delivered, world, rng, affected, all_delivered=True)
    # every non-random variant of the step is a record of its own
    assert len({k.result[1] for k in delivered}) == len(delivered)
    assert sum(1 for k in delivered if k.edge[0].digest == step) == 8
