"""Unit tests of the engine simulator: Go encodings, key graphs, layers, and the import
checker's fidelity to buildkit (what fails an import, what is a hit, what is a wrong hit)."""

import hashlib
import json
import random
import string

import pytest

from enginesim import gojson, layers
from enginesim.goconfig import ConfigError, decode
from enginesim.graph import EngineKeys, Workload, depends_on_random, folded_digest, project, root_key
from enginesim.importcheck import check_import
from enginesim.keystorage import key_storage

SCALE = 4096


def _keys(seed=1):
    return EngineKeys(random.Random(seed), 1_719_940_563_000_000_000, -180)


def _project(name="api", base="golang:1.22-bookworm"):
    return project(name, base, 0, SCALE)


def ideal_config(keys, workload, only=None):
    """What a correct service returns after `keys`' engine exported `workload` (or `only`)."""
    config = {"layers": [], "records": []}
    layer_at, record_at = {}, {}

    def layer(l, parent):
        key = (l.digest, parent)
        if key not in layer_at:
            layer_at[key] = len(config["layers"])
            entry = {"blob": l.digest, "annotations": {"mediaType": l.media_type, "diffID": l.diff_id,
                                                        "size": l.size, "createdAt": l.created_at}}
            if parent != 0:  # Go's omitempty
                entry["parent"] = parent
            config["layers"].append(entry)
        return layer_at[key]

    def root(key_id):
        if key_id not in record_at:
            record_at[key_id] = len(config["records"])
            config["records"].append({"digest": key_id})
        return record_at[key_id]

    def record(op, output):
        ident = op.output_ident(output)
        if ident in record_at:
            return record_at[ident]
        entry = keys.key_of(op, output)
        if not op.inputs:
            index = root(entry.id)
        else:
            inputs = []
            for i, inp in enumerate(op.inputs):
                alts = [{"selector": inp.selector, "link": record(inp.op, inp.output)}]
                if inp.content_alt:
                    alts.append({"link": root(op.content_key(i))})
                inputs.append(alts)
            index = len(config["records"])
            config["records"].append({"digest": folded_digest(op.cache_digest, output), "inputs": inputs})
        record_at[ident] = index
        if only is None or (op, output) in only:
            parent = -1
            for l in keys.chain(op, output):
                parent = layer(l, parent)
            config["records"][index]["layers"] = [{"layer": parent, "createdAt": "2024-07-02T14:16:03Z"}]
        return index

    for op, output in workload.outputs():
        if not depends_on_random(op):
            record(op, output)
    return config


def _exported(workload):
    return {op.output_ident(o) for op, o in workload.outputs() if not depends_on_random(op)}


# --- Go encodings ----------------------------------------------------------------------------

def test_go_time_marshals_nanoseconds_offsets_and_drops_trailing_zeros():
    assert gojson.GoTime(1_719_940_563_123_456_789, -180).marshal() == "2024-07-02T14:16:03.123456789-03:00"
    assert gojson.GoTime(1_719_940_563_120_000_000, 0).marshal() == "2024-07-02T17:16:03.12Z"
    assert gojson.GoTime(1_719_940_563_000_000_000, 330).marshal() == "2024-07-02T22:46:03+05:30"
    t = gojson.parse_time("2024-07-02T14:16:03.123456789-03:00")
    assert t == gojson.GoTime(1_719_940_563_123_456_789, -180)
    assert gojson.parse_time(gojson.ZERO_TIME).marshal() == gojson.ZERO_TIME
    for bad in ("2024-07-02 14:16:03Z", "2024-07-02T14:16:03", 1719940563, "2024-13-02T14:16:03Z"):
        with pytest.raises(ValueError):
            gojson.parse_time(bad)


def test_go_json_encoder_output():
    assert gojson.encode({"Links": gojson.go_list([]), "D": "<a&b>"}) == \
        b'{"Links":null,"D":"\\u003ca\\u0026b\\u003e"}\n'


# --- key graphs --------------------------------------------------------------------------------

def test_root_ids_are_content_addresses_and_other_ids_random_per_engine():
    workload = Workload.of(_project())
    a, b = _keys(1), _keys(2)
    a.run(workload)
    b.run(workload)
    for op, output in workload.outputs():
        ka, kb = a.key_of(op, output).id, b.key_of(op, output).id
        if op.random:
            assert ka.startswith("random:") and kb.startswith("random:") and ka != kb
        elif not op.inputs:
            expected = "sha256:" + hashlib.sha256(f"{op.cache_digest}@{output}".encode()).hexdigest()
            assert ka == kb == expected == root_key(op.cache_digest, output)
        else:
            assert ka != kb and len(ka) == 25 and set(ka) <= set(string.digits + string.ascii_lowercase)


def test_links_fold_the_output_index_and_give_inputs_alternatives():
    keys = _keys()
    workload = Workload.of(_project())
    keys.run(workload)
    build = next(op for op in workload.ops if op.outputs == 2)
    out0, out1 = keys.key_of(build, 0).id, keys.key_of(build, 1).id
    links0 = [l for l in keys.links if l["ID"] == out0]
    links1 = [l for l in keys.links if l["ID"] == out1]
    assert {l["Digest"] for l in links0} == {folded_digest(build.cache_digest, 0)}
    assert {l["Digest"] for l in links1} == {folded_digest(build.cache_digest, 1)}
    assert [(l["LinkedID"], l["Input"], l["Selector"]) for l in links0] == \
        [(l["LinkedID"], l["Input"], l["Selector"]) for l in links1]
    copy = next(op for op in workload.ops if op.description == "copy go.mod go.sum /app/")
    alts = [l for l in keys.links if l["ID"] == keys.key_of(copy, 0).id and l["Input"] == 1]
    assert len(alts) == 2 and {l["Selector"] for l in alts} == {copy.inputs[1].selector, ""}
    assert copy.inputs[1].selector.startswith("sha256:")
    payload = json.loads(gojson.encode(keys.records_payload()))
    content_keys = [k for k in payload["CacheKeys"] if k["Results"] is None]
    assert content_keys and all(k["ID"].startswith("sha256:") for k in content_keys)


def test_same_command_on_another_base_shares_link_digests_but_not_identity():
    a = Workload.of(_project(base="golang:1.22-bookworm"))
    b = Workload.of(_project(base="golang:1.21.1-bookworm"))
    deps_a = next(op for op in a.ops if "apt-get" in op.description)
    deps_b = next(op for op in b.ops if "apt-get" in op.description)
    assert deps_a.cache_digest == deps_b.cache_digest
    assert deps_a.ident != deps_b.ident


def test_layers_are_real_reproducible_zstd_tars():
    keys = _keys()
    workload = Workload.of(_project())
    keys.run(workload)
    final = workload.ops[-1]
    chain = keys.chain(final, 0)
    for layer in chain:
        raw = layers.decompress(layer.blob)
        assert layer.digest == "sha256:" + hashlib.sha256(layer.blob).hexdigest()
        assert layer.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert layer.size == len(layer.blob)
        if layer.media_type == layers.ZSTD_MEDIA_TYPE:
            assert layer.blob[:4] == b"\x28\xb5\x2f\xfd"
        else:  # image layers keep the registry's gzip
            assert layer.media_type == layers.DOCKER_GZIP_MEDIA_TYPE and layer.blob[:2] == b"\x1f\x8b"
        assert layers.read_origin(raw) == layer.origin
        desc = layer.descriptor()
        assert desc["annotations"]["containerd.io/uncompressed"] == layer.diff_id
        gojson.parse_time(desc["annotations"]["buildkit/createdat"])
    assert {l.media_type for l in chain} == {layers.ZSTD_MEDIA_TYPE, layers.DOCKER_GZIP_MEDIA_TYPE}
    other = _keys(9)
    other.run(workload)
    assert [l.digest for l in other.chain(final, 0)] == [l.digest for l in chain]


# --- the import checker ------------------------------------------------------------------------

def _engine_pair(*extra_targets):
    a_work = Workload.of(_project())
    a = _keys(1)
    a.run(a_work)
    b_work = Workload.of(_project() + list(extra_targets))
    b = _keys(2)
    b.run(b_work)
    return a, a_work, b, b_work


def test_an_ideal_config_gives_every_exported_key_and_nothing_else():
    trap = _project(base="golang:1.21.1-bookworm")
    a, a_work, b, b_work = _engine_pair(*trap)
    report = check_import(ideal_config(a, a_work), b, b_work, _exported(a_work))
    assert report.violations == [] and report.wrong_hits == [] and report.misses == []
    assert len(report.hits) == report.expected == len(_exported(a_work))
    assert report.keys == sum(1 for _ in b_work.outputs())


def test_linking_by_digest_alone_is_a_wrong_hit():
    trap = _project(base="golang:1.21.1-bookworm")
    a, a_work, b, b_work = _engine_pair(*trap)
    config = ideal_config(a, a_work)
    # What a service keyed by digest alone does: B's trap base is a root the config lacks, so
    # graft it in and point the deps record's input at it, keeping A's result.
    trap_ops = Workload.of(trap).ops
    trap_base = next(op for op in trap_ops if op.kind == "image" and "1.21.1" in op.definition)
    trap_deps = next(op for op in trap_ops if "apt-get" in op.description)
    deps = next(i for i, r in enumerate(config["records"])
                if r.get("inputs") and r["digest"] == folded_digest(trap_deps.cache_digest, 0))
    config["records"].append({"digest": b.key_of(trap_base, 0).id})
    config["records"][deps]["inputs"][0].append({"link": len(config["records"]) - 1})
    report = check_import(config, b, b_work, _exported(a_work))
    assert any("apt-get" in what for what, _ in report.wrong_hits), report.wrong_hits


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["layers"][0].pop("annotations"), "missing annotations"),
    (lambda c: c["layers"][0]["annotations"].pop("diffID"), "missing diffID"),
    (lambda c: c["records"][-1]["layers"][0].update(layer=len(c["layers"])), "invalid layer index"),
    (lambda c: c["layers"][0].update(parent=0), "invalid looping layer"),
    (lambda c: c["records"][-1].setdefault("inputs", []).append([{"link": len(c["records"])}]), "invalid record ID"),
    (lambda c: c["records"][0].setdefault("inputs", []).append([{"link": len(c["records"]) - 1}]), "invalid looping record"),
    (lambda c: c["layers"][1].update(parent=1.0), "cannot unmarshal number"),
    (lambda c: c["records"][0].update(digest=7), "cannot unmarshal number"),
    (lambda c: c["layers"][1]["annotations"].update(createdAt="yesterday"), "RFC 3339"),
])
def test_what_makes_buildkit_fail_the_whole_import(mutate, message):
    a, a_work, b, b_work = _engine_pair()
    config = ideal_config(a, a_work)
    mutate(config)
    report = check_import(config, b, b_work, _exported(a_work))
    assert report.hits == []
    assert len(report.violations) == 1 and message in report.violations[0], report.violations


def test_go_decoding_leniencies():
    config = decode({"Layers": [{"blob": "sha256:x", "annotations": {"diffID": "sha256:y"}}],
                     "RECORDS": [{"digest": "sha256:r", "layers": [{"layer": 0}], "unknown": 1}]})
    assert config.layers[0].parent == 0 and config.records[0].results[0].layer == 0
    assert decode(None).records == [] and decode({"layers": None}).layers == []
    with pytest.raises(ConfigError):
        decode([])


def test_a_duplicated_root_drops_the_links_made_to_the_first():
    a, a_work, b, b_work = _engine_pair()
    config = ideal_config(a, a_work)
    roots = [i for i, r in enumerate(config["records"]) if "inputs" not in r]
    base = config["records"][roots[0]]
    config["records"].append({"digest": base["digest"]})  # a second, link-less copy, last
    report = check_import(config, b, b_work, _exported(a_work))
    assert report.wrong_hits == [] and report.violations == []
    assert report.misses, "dependents of the replaced root can no longer be found"
    assert any("both roots" in n for n in report.notes)


def test_random_records_vanish_with_their_links_and_last_result_wins():
    a, a_work, b, b_work = _engine_pair()
    config = ideal_config(a, a_work)
    storage_before = key_storage(decode(config))
    config["records"].append({"digest": "random:" + "0" * 64})
    config["records"][1].setdefault("inputs", []).append([{"link": len(config["records"]) - 1}])
    storage = key_storage(decode(config))
    assert not any(k.startswith("random:") for k in storage.by_id)
    assert len(storage.by_id) == len(storage_before.by_id)
    # Two results: the engine keeps the last one, so a stale first one is harmless...
    rec = next(r for r in config["records"] if r.get("layers"))
    rec["layers"] = [{"layer": 0}] + rec["layers"]
    assert check_import(config, b, b_work, _exported(a_work)).wrong_hits == []
    # ...and a wrong last one is a wrong hit.
    rec["layers"] = rec["layers"][1:] + [{"layer": 0}]
    assert check_import(config, b, b_work, _exported(a_work)).wrong_hits


def test_a_record_missing_one_inputs_links_is_not_found():
    a, a_work, b, b_work = _engine_pair()
    config = ideal_config(a, a_work)
    final_digest = folded_digest(a_work.ops[-3].cache_digest, 0)  # copy /out/app /app
    final = next(r for r in config["records"] if r["digest"] == final_digest and r.get("inputs"))
    final["inputs"][1] = []
    report = check_import(config, b, b_work, _exported(a_work))
    assert report.wrong_hits == []
    assert any("copy /out/app" in m for m in report.misses)


def test_a_misdescribed_layer_is_a_violation_even_on_a_right_hit():
    a, a_work, b, b_work = _engine_pair()
    config = ideal_config(a, a_work)
    config["layers"][0]["annotations"]["size"] += 1
    report = check_import(config, b, b_work, _exported(a_work))
    assert report.hits and any("described as" in v for v in report.violations)


def test_request_budget_stops_a_run():
    from enginesim.wire import CallLog, ProtocolError

    log = CallLog(budget=2)
    log.reserve()
    log.reserve()
    with pytest.raises(ProtocolError, match="budget"):
        log.reserve()


def test_responses_decode_like_gos_json_decoder():
    from enginesim.wire import _go_decode

    assert _go_decode(b' \n{"URL": "u"}\n{"ignored": ') == {"URL": "u"}
    assert _go_decode(b"null") is None
    with pytest.raises(ValueError):
        _go_decode(b'{"Size": NaN}')
