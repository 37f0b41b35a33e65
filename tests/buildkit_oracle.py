"""Building /records and /layers payloads the way an engine writes them, for the graph tests."""

import gzip
import hashlib
import json
import secrets
import string
from pathlib import Path

from blobs.models import Blob
from blobs.storage import get_store
from tests.support import engine_request

MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+zstd"
ZERO = "0001-01-01T00:00:00Z"


def sha(text):
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def root_key(digest, output=0):
    """buildkit's rootKey: the ID of an input-less cache key."""
    if digest.startswith("random:"):
        return "random:" + hashlib.sha256(f"{digest}@{output}".encode()).hexdigest()
    return sha(f"{digest}@{output}")


def output_key(digest, output=0):
    """buildkit's outputKey: a link's digest with the output index folded in."""
    return sha(f"{digest}@{output}")


def random_key_id(rng=None):
    alphabet = string.digits + string.ascii_lowercase
    if rng is None:
        return "".join(secrets.choice(alphabet) for _ in range(25))
    return "".join(rng.choice(alphabet) for _ in range(25))


def key(key_id, *results):
    return {"ID": key_id, "Results": [dict(r) for r in results] or None}


def result(ref_id, created_at="2026-11-27T10:00:00.123456789Z", description="exec make"):
    return {"ID": ref_id, "CreatedAt": created_at, "Description": description}


def link(key_id, linked_id, input_index, digest, selector=""):
    return {"ID": key_id, "LinkedID": linked_id, "Input": input_index, "Digest": digest, "Selector": selector}


def descriptor(blob_digest, size, diff_id=None, media_type=MEDIA_TYPE, created_at=None):
    annotations = {"containerd.io/uncompressed": diff_id or sha("diff " + blob_digest)}
    if created_at:
        annotations["buildkit/createdat"] = created_at
    return {"mediaType": media_type, "digest": blob_digest, "size": size, "annotations": annotations}


def store_blob(org, digest, size, state="verified"):
    """A blob row as the blob app leaves it, with a file of that size on the built-in
    storage (the blob app checks that a verified blob's file is still there)."""
    Blob.objects.get_or_create(organization=org, digest=digest, defaults={"size": size, "state": state})
    store = get_store()
    if state == "verified" and store.kind == "filesystem":
        path = Path(store.path(org.pk, digest))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * size)


def post_records(client, token, keys, links, **extra):
    return engine_request(client, "POST", "/magicache/records", token, {"CacheKeys": keys, "Links": links}, **extra)


def post_layers(client, token, updated, **extra):
    return engine_request(client, "POST", "/magicache/layers", token, {"UpdatedRecords": updated}, **extra)


def get_import(client, token):
    response = engine_request(client, "GET", "/magicache/import", token, HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200, response.content
    body = response.content
    if response.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return json.loads(body)


# ---- an independent model of what buildkit does with an imported config ----------------
#
# Written from buildkit v0.14.1 cache/remotecache/v1 (parse.go, chains.go, cachestorage.go),
# solver/cachemanager.go and dagger's engine/cache/manager.go: the engine decodes the JSON,
# builds a descriptor provider from every layer (failing on missing annotations or
# diffID), runs ParseConfig into CacheChains (random: digests become no-op records), then
# NewCacheKeyStorage, where an input-less record is stored under its digest (a later one
# replaces an earlier one) and every other record gets a fresh ID.

import re
from dataclasses import dataclass, field

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


class ParseFailure(Exception):
    """The engine would fail the whole import."""


def _go_value(value, kind, where):
    """Go's json.Unmarshal into a typed field: null keeps the zero value, a wrong type fails."""
    if value is None:
        return None
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "time":
        ok = isinstance(value, str) and _RFC3339.fullmatch(value) is not None
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ParseFailure(f"cannot unmarshal {value!r} into {where}")
    return value


@dataclass(eq=False)
class _Item:
    digest: str
    links: list = field(default_factory=list)  # per input index: {(source item, selector)}
    result: tuple = None  # blob digests, base first
    result_time: str = None


class _Nop:
    """CacheChains.Add for a random: digest: links and results vanish."""


@dataclass
class _Stored:
    item: _Item
    links: dict = field(default_factory=dict)  # (link digest, input, selector) -> [ids]


class ImportedCache:
    """The engine's view of an imported config: cacheKeyStorage plus the solver's lookup."""

    def __init__(self, config):
        layers = _go_value(config.get("layers"), list, "CacheConfig.layers") or []
        records = _go_value(config.get("records"), list, "CacheConfig.records") or []
        self.layers = [self._decode_layer(n, layer) for n, layer in enumerate(layers)]
        self.records = [self._decode_record(n, record) for n, record in enumerate(records)]
        # manager.descriptorProviderPair, for every layer before anything else
        self.provider = {}
        for blob, _, annotations in self.layers:
            if annotations is None:
                raise ParseFailure(f"missing annotations for layer {blob}")
            if not annotations.get("diffID"):
                raise ParseFailure(f"missing diffID for layer {blob}")
            self.provider[blob] = annotations
        self.items = []
        self._parse_config()
        self.by_id = {}
        self._by_item = {}
        for item in self.items:
            self._add_item(item)

    @staticmethod
    def _decode_layer(n, layer):
        where = f"layers[{n}]"
        _go_value(layer, dict, where)
        blob = _go_value(layer.get("blob"), str, where + ".blob") or ""
        parent = _go_value(layer.get("parent"), int, where + ".parent") or 0
        annotations = _go_value(layer.get("annotations"), dict, where + ".annotations")
        if annotations is not None:
            annotations = {
                "mediaType": _go_value(annotations.get("mediaType"), str, where + ".mediaType") or "",
                "diffID": _go_value(annotations.get("diffID"), str, where + ".diffID") or "",
                "size": _go_value(annotations.get("size"), int, where + ".size") or 0,
                "createdAt": _go_value(annotations.get("createdAt"), "time", where + ".createdAt"),
            }
        return blob, parent, annotations

    @staticmethod
    def _decode_record(n, record):
        where = f"records[{n}]"
        _go_value(record, dict, where)
        if record.get("chains"):
            raise ParseFailure("this model does not cover chained results; the service never emits them")
        digest = _go_value(record.get("digest"), str, where + ".digest") or ""
        inputs = []
        for i, alternatives in enumerate(_go_value(record.get("inputs"), list, where + ".inputs") or []):
            decoded = []
            for alt in _go_value(alternatives, list, f"{where}.inputs[{i}]") or []:
                _go_value(alt, dict, f"{where}.inputs[{i}][]")
                decoded.append(
                    (
                        _go_value(alt.get("selector"), str, "selector") or "",
                        _go_value(alt.get("link"), int, "link") or 0,
                    )
                )
            inputs.append(decoded)
        results = []
        for res in _go_value(record.get("layers"), list, where + ".layers") or []:
            _go_value(res, dict, where + ".layers[]")
            results.append(
                (
                    _go_value(res.get("layer"), int, "layer") or 0,
                    _go_value(res.get("createdAt"), "time", "createdAt"),
                )
            )
        return digest, inputs, results

    # ParseConfig / parseRecord / getRemoteChain
    def _parse_config(self):
        cache = {}
        for n in range(len(self.records)):
            self._parse_record(n, cache)

    def _parse_record(self, n, cache):
        if n in cache:
            if cache[n] is None:
                raise ParseFailure("invalid looping record")
            return cache[n]
        if not 0 <= n < len(self.records):
            raise ParseFailure(f"invalid record ID: {n}")
        digest, inputs, results = self.records[n]
        if digest.startswith("random:"):
            record = _Nop()
        else:
            record = _Item(digest)
            self.items.append(record)
        cache[n] = None
        for i, alternatives in enumerate(inputs):
            for selector, link_index in alternatives:
                source = self._parse_record(link_index, cache)
                if isinstance(record, _Item) and isinstance(source, _Item):
                    while len(record.links) <= i:
                        record.links.append(set())
                    record.links[i].add((source, selector))
        for layer_index, created_at in results:
            chain = self._remote_chain(layer_index, set())
            if chain is not None and isinstance(record, _Item):
                record.result, record.result_time = tuple(chain), created_at  # the last one wins
        cache[n] = record
        return record

    def _remote_chain(self, n, visited):
        if n in visited:
            raise ParseFailure("invalid looping layer")
        visited.add(n)
        if not 0 <= n < len(self.layers):
            raise ParseFailure(f"invalid layer index {n}")
        blob, parent, _ = self.layers[n]
        if blob not in self.provider:
            return None
        if parent == -1:
            return [blob]
        chain = self._remote_chain(parent, visited)
        return None if chain is None else chain + [blob]

    # NewCacheKeyStorage / addItemToStorage
    def _add_item(self, item):
        if item in self._by_item:
            if self._by_item[item] == "":
                raise ParseFailure("invalid loop")
            return self.by_id[self._by_item[item]]
        item_id = item.digest if not item.links else f"fresh-{len(self._by_item)}"
        self._by_item[item] = ""
        for i, alternatives in enumerate(item.links):
            for source, selector in alternatives:
                stored = self._add_item(source)
                stored.links.setdefault((item.digest, i, selector), []).append(item_id)
        self._by_item[item] = item_id
        stored = _Stored(item)
        self.by_id[item_id] = stored
        return stored

    # the solver's lookup (cacheManager.Query, edge.go's intersection over inputs)
    def find(self, query):
        """IDs of the imported keys that a build of `query` would match."""
        if not query.inputs:
            key_id = root_key(query.digest, query.output)
            return {key_id} if key_id in self.by_id else set()
        link_digest = output_key(query.digest, query.output)
        found = None
        for i, (source, selector) in enumerate(query.inputs):
            ids = set()
            for source_id in self.find(source):
                ids.update(self.by_id[source_id].links.get((link_digest, i, selector), ()))
            found = ids if found is None else found & ids
        return found

    def lookup(self, query):
        """The layer chains a build of `query` would reuse."""
        return {self.by_id[i].item.result for i in self.find(query) if self.by_id[i].item.result is not None}


@dataclass(frozen=True)
class Query:
    """A build step as the solver sees it: digest, output index, one (input, selector) per input."""

    digest: str
    output: int = 0
    inputs: tuple = ()


# ---- simulated engines -----------------------------------------------------------------


@dataclass(eq=False)
class Op:
    """A vertex of the build world: digest, outputs and, per input, alternative sources
    (edge, selector) where an edge is (Op, output index)."""

    digest: str
    outputs: int = 1
    inputs: tuple = ()


@dataclass(eq=False)
class EngineKey:
    id: str
    edge: tuple
    # per input index: list of (source EngineKey, selector), the engine's alternatives
    inputs: list
    result: tuple = None  # (ref id, chain of (blob digest, size))


def _is_random_edge(edge):
    return edge[0].digest.startswith("random:")


class Engine:
    """One engine's local key store after building some edges of the world."""

    def __init__(self, name, world, edges, rng, result_rate=0.6, drop_alternatives=0.3):
        self.name = name
        self.keys = {}  # edge -> EngineKey
        for edge in edges:
            self._key(edge, world, rng, drop_alternatives)
        for engine_key in self.keys.values():
            if rng.random() < result_rate:
                engine_key.result = (f"ref-{name}-{engine_key.id[-12:]}", self._chain(engine_key, rng))

    def _key(self, edge, world, rng, drop_alternatives):
        if edge in self.keys:
            return self.keys[edge]
        op, output = edge
        inputs = []
        for alternatives in op.inputs:
            kept = list(alternatives)
            if len(kept) > 1 and rng.random() < drop_alternatives:
                kept = rng.sample(kept, rng.randint(1, len(kept) - 1))
            inputs.append([(self._key(src, world, rng, drop_alternatives), sel) for src, sel in kept])
        # Random per engine, as buildkit's identity.NewID; the counter keeps them distinct
        # even when hypothesis hands out degenerate randomness.
        key_id = root_key(op.digest, output) if not op.inputs else random_key_id(rng)[:20] + f"{len(self.keys):05d}"
        self.keys[edge] = EngineKey(key_id, edge, inputs)
        return self.keys[edge]

    def _chain(self, engine_key, rng):
        base = ()
        if engine_key.inputs and rng.random() < 0.5:
            first = engine_key.inputs[0][0][0]
            if first.result is not None:
                base = first.result[1]  # a chain prefix shared with the input's result
        own = tuple(
            (sha(f"blob {self.name} {engine_key.id} {n}"), rng.randint(1, 10_000))
            for n in range(rng.randint(1, 2))
        )
        return base + own

    def payload(self, rng):
        keys, links = [], []
        for engine_key in self.keys.values():
            results = []
            if engine_key.result is not None:
                results.append(result(engine_key.result[0], description=f"{self.name} {engine_key.id}"))
            keys.append(key(engine_key.id, *results))
            op, output = engine_key.edge
            for i, alternatives in enumerate(engine_key.inputs):
                for source, selector in alternatives:
                    links.append(link(engine_key.id, source.id, i, output_key(op.digest, output), selector))
        rng.shuffle(keys)
        rng.shuffle(links)
        return keys, links

    def by_ref(self):
        return {k.result[0]: k for k in self.keys.values() if k.result is not None}

    def query(self, engine_key):
        """The query that a rebuild of this key makes, through the first alternative of each
        input that an import can hold (random roots never can)."""
        op, output = engine_key.edge
        cache = {}
        chosen = []
        for alternatives in engine_key.inputs:
            source, selector = next(
                ((src, sel) for src, sel in alternatives if importable(src, cache)), alternatives[0]
            )
            chosen.append((self.query(source), selector))
        return Query(op.digest, output, tuple(chosen))


def importable(engine_key, cache=None):
    """Whether buildkit could ever find this key: not random, and every input has an
    importable alternative (random roots vanish with their links)."""
    if cache is None:
        cache = {}
    if engine_key not in cache:
        if not engine_key.inputs:
            cache[engine_key] = not _is_random_edge(engine_key.edge)
        else:
            cache[engine_key] = all(
                any(importable(src, cache) for src, _ in alternatives) for alternatives in engine_key.inputs
            )
    return cache[engine_key]


def matches(engine_key, query):
    """The truth: would this engine key be a correct hit for `query`?"""
    op, output = engine_key.edge
    if op.digest != query.digest or output != query.output or len(engine_key.inputs) != len(query.inputs):
        return False
    if not engine_key.inputs:
        return not _is_random_edge(engine_key.edge)
    return all(
        any(sel == q_sel and matches(src, q_src) for src, sel in alternatives)
        for alternatives, (q_src, q_sel) in zip(engine_key.inputs, query.inputs)
    )


def make_world(rng, digests=5, roots=4, ops=10, random_roots=1):
    """Ops over a small digest pool, so that one operation runs on different inputs. As in
    buildkit, an operation's digest fixes how many inputs it has."""
    pool = [(sha(f"op {n}"), 1 + n % 2) for n in range(digests)]
    selectors = ["", sha("selector a"), sha("selector b")]
    world = [Op(sha(f"image {n}"), outputs=rng.randint(1, 2)) for n in range(roots)]
    for n in range(random_roots):
        world.append(Op("random:" + hashlib.sha256(f"random {n}".encode()).hexdigest()))
    for _ in range(ops):
        digest, input_count = rng.choice(pool)
        inputs = []
        for _ in range(input_count):
            alternatives = []
            for _ in range(rng.randint(1, 2)):
                src = rng.choice(world)
                alternatives.append(((src, rng.randrange(src.outputs)), rng.choice(selectors)))
            inputs.append(tuple(dict.fromkeys(alternatives)))
        world.append(Op(digest, outputs=rng.randint(1, 2), inputs=tuple(inputs)))
    return world


def edges_of(world):
    return [(op, output) for op in world for output in range(op.outputs)]


def closure(edges):
    """The edges plus everything they are built from."""
    seen, stack = {}, list(edges)
    while stack:
        edge = stack.pop()
        if edge in seen:
            continue
        seen[edge] = True
        stack.extend(src for alternatives in edge[0].inputs for src, _ in alternatives)
    return list(seen)


def mutations(query, world, rng):
    """Queries a hair away from `query`: another digest, output, selector or input."""
    out = [Query(sha("never built"), query.output, query.inputs), Query(query.digest, query.output + 1, query.inputs)]
    if query.inputs:
        i = rng.randrange(len(query.inputs))
        src, sel = query.inputs[i]
        changed = list(query.inputs)
        changed[i] = (src, sha("selector z") if sel == "" else "")
        out.append(Query(query.digest, query.output, tuple(changed)))
        other = rng.choice(world)
        changed = list(query.inputs)
        changed[i] = (Query(other.digest, 0, ()) if not other.inputs else Query(sha("other"), 0, ()), sel)
        out.append(Query(query.digest, query.output, tuple(changed)))
    return out
