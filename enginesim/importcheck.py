"""Judge an import: which of an engine's keys the imported cache answers, and whether
each answer is the right output.

A hit is a key that the engine's lookup finds with a result. It is right when the result's
layer chain is exactly the chain this engine would have built for that key (layers are
reproducible, so equal work means equal digests); otherwise it is a wrong hit, a build
silently reusing some other operation's output: the worst thing a cache can do.
"""

from dataclasses import dataclass, field

from enginesim.goconfig import ConfigError, decode
from enginesim.graph import EngineKeys, depends_on_random, folded_digest
from enginesim.keystorage import KeyStorage, key_storage


@dataclass
class Hit:
    op: object
    output: int
    chain: list  # CacheLayer entries from the config, base first


@dataclass
class ImportCheck:
    keys: int = 0
    hits: list = field(default_factory=list)
    expected: int = 0  # keys some engine had exported before this import
    misses: list = field(default_factory=list)  # expected but not found
    wrong_hits: list = field(default_factory=list)  # (description, why)
    unexpected_hits: int = 0  # right content, exported outside this run's ledger
    violations: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    records: int = 0
    layers: int = 0


def check_import(body, keys: EngineKeys, workload, exported_idents) -> ImportCheck:
    """`body` is the decoded /import JSON; `exported_idents` the output idents that engines
    of this run have exported (records whose layers they posted)."""
    report = ImportCheck()
    try:
        config = decode(body)
        storage = key_storage(config)
    except ConfigError as exc:
        report.violations.append(f"/import: the engine would reject the whole config: {exc}")
        return report
    report.records, report.layers = len(config.records), len(config.layers)
    report.notes.extend(storage.notes)
    matched = lookup(storage, keys, workload)
    for op, output in workload.outputs():
        report.keys += 1
        ident = op.output_ident(output)
        expected = ident in exported_idents and not depends_on_random(op)
        report.expected += expected
        found = [storage.by_id[i] for i in matched[(op.ident, output)]]
        results = [s.item.result for s in found if s.item.result is not None]
        if not results:
            if expected:
                report.misses.append(f"{op.description} (output {output})")
            continue
        want = keys.chain(op, output)
        bad = [r for r in results if [layer.blob for layer in r] != [layer.digest for layer in want]]
        if bad or depends_on_random(op):
            why = "depends on a random: key" if not bad else (
                f"got layers {[layer.blob[:19] for layer in bad[0]]}, built {[layer.digest[:19] for layer in want]}"
            )
            report.wrong_hits.append((f"{op.description} (output {output})", why))
            continue
        for got, built in zip(results[-1], want):
            ann = got.annotations
            if (ann.diff_id, ann.size, ann.media_type) != (built.diff_id, built.size, built.media_type):
                report.violations.append(
                    f"/import: layer {built.digest} described as diffID={ann.diff_id} size={ann.size} "
                    f"mediaType={ann.media_type}; uploaded diffID={built.diff_id} size={built.size} "
                    f"mediaType={built.media_type}"
                )
        report.hits.append(Hit(op, output, results[-1]))
        if not expected:
            report.unexpected_hits += 1
    return report


def lookup(storage: KeyStorage, keys: EngineKeys, workload):
    """{(op.ident, output): set of stored key IDs} the solver would reach for each key."""
    matched = {}
    for op, output in workload.outputs():
        entry = keys.key_of(op, output)
        if not op.inputs:
            matched[(op.ident, output)] = {entry.id} if storage.exists(entry.id) else set()
            continue
        digest = folded_digest(op.cache_digest, output)
        per_input = []
        for index, inp in enumerate(op.inputs):
            alternatives = [(matched[(inp.op.ident, inp.output)], inp.selector)]
            if inp.content_alt:
                content = op.content_key(index)
                alternatives.append(({content} if storage.exists(content) else set(), ""))
            reached = set()
            for sources, selector in alternatives:
                for source in sources:
                    reached.update(storage.walk_links(source, index, digest, selector))
            per_input.append(reached)
        matched[(op.ident, output)] = set.intersection(*per_input) if per_input else set()
    return matched

