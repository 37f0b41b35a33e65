"""Build graphs and the cache keys an engine derives from them.

An `Op` is one vertex of a build: an image pull or local source (roots), or an exec or file
operation over inputs. Its `cache_digest` is what buildkit calls the cache map digest: the
definition with the inputs left out. Two execs running the same command on different bases
therefore share a cache digest and differ only by the keys they link from; a service that
keys records by digest alone hands one of them the other's output. The catalog builds those
traps on purpose.

`EngineKeys` is one engine's key store for the ops it ran: root key IDs are content
addresses (`sha256("<cache digest>@<output>")`, buildkit's rootKey), every other key ID is a
random 25-character base-36 string of that engine, and links carry the dependent's
output-folded digest, as bboltcachestorage.WalkBacklinks reports them.
"""

import hashlib
import random
import string
from dataclasses import dataclass, field
from functools import cached_property

from enginesim.gojson import GoTime
from enginesim.layers import DOCKER_GZIP_MEDIA_TYPE, make_layer


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def root_key(cache_digest: str, output: int) -> str:
    """buildkit solver.rootKey: the ID of an input-less key."""
    folded = hashlib.sha256(f"{cache_digest}@{output}".encode()).hexdigest()
    if cache_digest.startswith("random:"):
        return "random:" + folded
    return "sha256:" + folded


def folded_digest(cache_digest: str, output: int) -> str:
    """The link digest with the output index folded in (never random: for a dependent)."""
    return "sha256:" + hashlib.sha256(f"{cache_digest}@{output}".encode()).hexdigest()


@dataclass(frozen=True)
class Input:
    op: "Op"
    output: int = 0
    selector: str = ""
    # buildkit adds a second key per input from a checksum of its content (slow cache):
    # a root key the dependent also links from, giving one input two alternatives.
    content_alt: bool = False


@dataclass(frozen=True, eq=False)
class Op:
    kind: str  # image, local, exec, file
    description: str
    definition: str  # stands for the op's definition without its inputs
    inputs: tuple = ()
    outputs: int = 1
    layer_sizes: tuple = (65536,)
    random: bool = False  # an op that must never be cached: its keys are random:

    @cached_property
    def cache_digest(self) -> str:
        # The sizes are part of what the op is: runs at another --scale build other outputs
        # and must not share keys with this one.
        return sha(f"{self.kind}|{self.definition}|{self.layer_sizes}")

    @cached_property
    def ident(self) -> str:
        """What the op is, inputs included: equal idents build equal outputs."""
        parts = [self.cache_digest, str(self.outputs)]
        parts += [f"{i}:{inp.op.ident}@{inp.output}/{inp.selector}" for i, inp in enumerate(self.inputs)]
        return sha("\n".join(parts))

    def output_ident(self, output: int) -> str:
        return sha(f"{self.ident}#{output}")

    def content_key(self, input_index: int) -> str:
        """The root key ID of the content checksum of one input (same on every engine)."""
        inp = self.inputs[input_index]
        checksum = sha(f"content:{inp.op.output_ident(inp.output)}:{inp.selector}")
        return root_key(checksum, 0)


def random_op(description: str) -> Op:
    """A root that must never be cached: each engine gives it a fresh random: key."""
    return Op("local", description, description, layer_sizes=(512,), random=True)


@dataclass
class Workload:
    """The ops one engine runs, in dependency order, with the outputs it keeps."""

    ops: list

    @staticmethod
    def of(targets):
        # Equal definitions are one vertex, as in buildkit, even when built as separate objects.
        seen, order = set(), []

        def visit(op):
            if op.ident in seen:
                return
            seen.add(op.ident)
            for inp in op.inputs:
                visit(inp.op)
            order.append(op)

        for target in targets:
            visit(target)
        return Workload(order)

    def outputs(self):
        for op in self.ops:
            for output in range(op.outputs):
                yield op, output


def depends_on_random(op: Op) -> bool:
    return op.random or any(depends_on_random(inp.op) for inp in op.inputs)


# --- the catalog of projects engines build -----------------------------------------------

BASES = ("golang:1.22-bookworm", "golang:1.23-bookworm", "node:20-alpine", "python:3.12-slim")
PROJECTS = ("api", "worker", "web", "cli", "billing", "search", "auth", "gateway")
RUNTIME = "gcr.io/distroless/static-debian12:nonroot"


def image(ref: str, scale: int) -> Op:
    return Op("image", f"pull {ref}", f"docker-image://{ref}", layer_sizes=(4 * scale, 2 * scale, scale))


def project(name: str, base: str, revision: int, scale: int) -> list:
    """One CI pipeline: toolchain image, deps, module download, build with two outputs,
    copy into a runtime image, and a version stamp that depends on a random: key."""
    base_img = image(base, scale)
    # Go's encoder writes "&" and ">" as \u0026 and \u003e: the service must decode them.
    deps = Op("exec", "exec sh -c apt-get update && apt-get install -y git make > /dev/null",
              "sh -c apt-get update && apt-get install -y git make",
              (Input(base_img),), layer_sizes=(scale,))
    src = Op("local", f"local {name} rev {revision}", f"local://{name}/src@{revision}", layer_sizes=(scale // 2,))
    manifest = Op("file", "copy go.mod go.sum /app/", "copy /go.mod,/go.sum -> /app/",
                  (Input(deps), Input(src, selector=sha("/go.mod"), content_alt=True)), layer_sizes=(2048,))
    download = Op("exec", "exec go mod download", "go mod download", (Input(manifest),), layer_sizes=(2 * scale,))
    with_src = Op("file", "copy . /app/", "copy / -> /app/",
                  (Input(download), Input(src, selector=sha("/"), content_alt=True)), layer_sizes=(scale // 2,))
    # Output 0 is the root filesystem, output 1 the /out mount: two keys whose links differ
    # only by the output index folded into their digest.
    build = Op("exec", "exec go build -o /out/app ./...", "go build -o /out/app ./... mounts=/,/out",
               (Input(with_src), Input(src, selector=sha("/out"))), outputs=2, layer_sizes=(scale, scale // 2))
    runtime = image(RUNTIME, max(scale // 4, 1024))
    final = Op("file", "copy /out/app /app", "copy /out/app -> /app",
               (Input(runtime), Input(build, output=1, selector=sha("/out/app"))), layer_sizes=(scale // 2,))
    stamp_src = random_op(f"local {name} .git (no cache)")
    stamp = Op("exec", "exec write version stamp", "sh -c git describe > /app/VERSION",
               (Input(final), Input(stamp_src)), layer_sizes=(1024,))
    return [final, build, stamp]


# --- one engine's key store --------------------------------------------------------------

_B36 = string.digits + string.ascii_lowercase


def random_id(rng: random.Random) -> str:
    return "".join(rng.choice(_B36) for _ in range(25))


@dataclass
class KeyEntry:
    op: Op
    output: int
    id: str
    ref_id: str | None  # None: the result was released, the key kept for its links
    created_at: GoTime | None
    older_ref_id: str | None = None  # a second, older result for the same key


@dataclass
class EngineKeys:
    """The keys, links and results an engine holds after running workloads."""

    rng: random.Random
    clock_ns: int
    offset_minutes: int
    entries: dict = field(default_factory=dict)  # (op.ident, output) -> KeyEntry
    content_keys: set = field(default_factory=set)
    links: list = field(default_factory=list)
    by_ref: dict = field(default_factory=dict)  # ref id -> KeyEntry
    # Every Nth non-root key has its result released (the key stays, linked) and every Mth
    # key holds two results, as in a long-running engine's store. 0: never.
    resultless_every: int = 0
    double_every: int = 0
    _count: int = 0
    _layers: dict = field(default_factory=dict)

    def run(self, workload: Workload):
        for op, output in workload.outputs():
            if (op.ident, output) in self.entries:
                continue
            if op.inputs:
                key_id = random_id(self.rng)
            elif op.random:
                key_id = root_key(f"random:{self.rng.getrandbits(256):064x}", output)
            else:
                key_id = root_key(op.cache_digest, output)
            self.clock_ns += self.rng.randrange(10**6, 3 * 10**9)
            entry = KeyEntry(op, output, key_id, random_id(self.rng), GoTime(self.clock_ns, self.offset_minutes))
            self._count += 1
            if op.inputs and self.resultless_every and self._count % self.resultless_every == 0:
                entry.ref_id = None
            elif self.double_every and self._count % self.double_every == 0:
                entry.older_ref_id = random_id(self.rng)
                self.by_ref[entry.older_ref_id] = entry
            self.entries[(op.ident, output)] = entry
            if entry.ref_id:
                self.by_ref[entry.ref_id] = entry
            link_digest = folded_digest(op.cache_digest, output)
            for index, inp in enumerate(op.inputs):
                source = self.entries[(inp.op.ident, inp.output)]
                self.links.append({"ID": key_id, "LinkedID": source.id, "Input": index,
                                   "Digest": link_digest, "Selector": inp.selector})
                if inp.content_alt:
                    content = op.content_key(index)
                    self.content_keys.add(content)
                    self.links.append({"ID": key_id, "LinkedID": content, "Input": index,
                                       "Digest": link_digest, "Selector": ""})

    def key_of(self, op, output):
        return self.entries[(op.ident, output)]

    def records_payload(self):
        """The /records body: every key (results of content keys are nil) and every link,
        in the order a bbolt walk gives (keys sorted by ID, backlinks by linked ID)."""
        keys = {}
        for entry in self.entries.values():
            results = []
            if entry.older_ref_id:
                older = GoTime(entry.created_at.unix_ns - 86_400 * 10**9, entry.created_at.offset_minutes)
                results.append({"ID": entry.older_ref_id, "CreatedAt": older.marshal(),
                                "Description": entry.op.description})
            if entry.ref_id:
                results.append({"ID": entry.ref_id, "CreatedAt": entry.created_at.marshal(),
                                "Description": entry.op.description})
            keys[entry.id] = {"ID": entry.id, "Results": results or None}
        for content in self.content_keys:
            keys.setdefault(content, {"ID": content, "Results": None})
        links = sorted(self.links, key=lambda link: (link["ID"], link["LinkedID"], link["Input"]))
        return {"CacheKeys": [keys[k] for k in sorted(keys)] or None, "Links": links or None}

    def chain(self, op: Op, output: int):
        """The layers of an output, base first: its input's chain plus its own layer."""
        cache_key = (op.ident, output)
        if cache_key in self._layers:
            return self._layers[cache_key]
        created = self.key_of(op, output).created_at.marshal()
        if op.kind == "image":
            chain = [make_layer(f"{op.definition} layer {i}", size, created, DOCKER_GZIP_MEDIA_TYPE)
                     for i, size in enumerate(op.layer_sizes)]
        else:
            base = []
            if op.inputs:
                inp = op.inputs[output] if output < len(op.inputs) else op.inputs[0]
                base = self.chain(inp.op, inp.output)
            size = op.layer_sizes[min(output, len(op.layer_sizes) - 1)]
            chain = base + [make_layer(f"{op.description} {op.output_ident(output)}", size, created)]
        self._layers[cache_key] = chain
        return chain

