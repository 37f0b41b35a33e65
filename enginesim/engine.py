"""One simulated engine: start (config, cache mounts, import), build, export, shutdown.

It runs the engine's loops once each, in the engine's order, over the Go-like client, and
records every protocol violation instead of stopping at the first, so one run reports
everything a deployment gets wrong.
"""

import random
import threading
from dataclasses import dataclass, field

from enginesim import layers as layerlib
from enginesim.graph import EngineKeys, Workload, depends_on_random
from enginesim.importcheck import ImportCheck, check_import
from enginesim.wire import GoHTTPClient, ProtocolError

RANGE_PIECE = 256 * 1024


@dataclass
class Ledger:
    """What the engines of one run did, shared between them: the ground truth for hits."""

    exported: set = field(default_factory=set)  # output idents whose layers were posted
    mounts: dict = field(default_factory=dict)  # name -> (digest, files) last uploaded
    layers: dict = field(default_factory=dict)  # digest -> Layer uploaded or known
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class EngineStats:
    hits: int = 0
    expected_hits: int = 0
    misses: int = 0
    unexpected_hits: int = 0
    keys_checked: int = 0
    records_posted: int = 0
    exported_records: int = 0
    layers_uploaded: int = 0
    layers_skipped: int = 0
    layers_downloaded: int = 0
    range_reopens: int = 0
    mounts_downloaded: int = 0
    mounts_uploaded: int = 0
    wrong_hits: list = field(default_factory=list)
    violations: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    miss_examples: list = field(default_factory=list)


class SimEngine:
    def __init__(self, name, base_url, token, call_log, ledger, seed, *, mounts=(), prune_every=0,
                 download_limit=None, offset_minutes=0, clock_ns=1_719_940_563_000_000_000,
                 resultless_every=0, double_every=0):
        self.name = name
        self.client = GoHTTPClient(base_url, token, call_log)
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.keys = EngineKeys(self.rng, clock_ns, offset_minutes, resultless_every=resultless_every,
                               double_every=double_every)
        self.workloads = []
        self.mount_names = list(mounts)
        self.mount_files = {}
        self.prune_every = prune_every
        self.download_limit = download_limit
        self.stats = EngineStats()
        self.config = None
        self.last_import: ImportCheck | None = None

    def violation(self, message):
        self.stats.violations.append(f"{self.name}: {message}")

    # --- start ---------------------------------------------------------------------------

    def start(self):
        """GET /config (all three durations non-zero), then cache mounts down."""
        body = self.call("GET", "config", {"EngineID": self.name})
        if body is None:
            return False
        for name in ("ImportPeriod", "ExportPeriod", "ExportTimeout"):
            value = body.get(name) if isinstance(body, dict) else None
            if isinstance(value, bool) or not isinstance(value, int) or value == 0:
                self.violation(f"/config: {name} must be a non-zero integer of nanoseconds, got {value!r}")
                return False
        self.config = body
        if self.mount_names:
            self.sync_mounts_down()
        return True

    def call(self, method, name, body=None, **kw):
        try:
            return self.client.api(method, name, body, **kw)
        except ProtocolError as exc:
            self.violation(str(exc))
            return None

    # --- import ----------------------------------------------------------------------------

    def import_and_check(self, workload: Workload, before_build=None):
        """GET /import before building `workload` and judge each of its keys.
        `before_build` runs between the import and the build (an early periodic export)."""
        # Snapshot the ground truth first: anything exported after this may or may not be in
        # the config, and must not count as a miss.
        with self.ledger.lock:
            exported = set(self.ledger.exported)
        try:
            body = self.client.api("GET", "import", has_body=False)
        except ProtocolError as exc:
            self.violation(str(exc))
            return None
        if before_build is not None:
            before_build()
        self.keys.run(workload)
        return check_import(body, self.keys, workload, exported)

    def absorb(self, check: ImportCheck, download=True):
        """Count an import's outcome in this engine's stats and download its hits."""
        self.last_import = check
        s = self.stats
        s.keys_checked += check.keys
        s.hits += len(check.hits)
        s.expected_hits += check.expected
        s.misses += len(check.misses)
        s.unexpected_hits += check.unexpected_hits
        s.miss_examples.extend(check.misses[:5])
        s.wrong_hits.extend(f"{self.name}: {what}: {why}" for what, why in check.wrong_hits)
        s.violations.extend(f"{self.name}: {v}" for v in check.violations)
        s.notes.extend(f"{self.name}: {n}" for n in check.notes)
        if download:
            self.download_hits(check)

    def download_hits(self, check: ImportCheck):
        """Fetch the layers a build would use, lazily, each once, and verify them."""
        seen = set()
        for hit in check.hits:
            for layer in hit.chain:
                if layer.blob in seen:
                    continue
                if self.download_limit is not None and len(seen) >= self.download_limit:
                    return
                seen.add(layer.blob)
                self.download_layer(layer.blob, layer.annotations.size, layer.annotations.diff_id)

    def download_layer(self, digest, size, diff_id):
        body = self.call("GET", "layerDownloadURL", {"Digest": digest})
        if body is None:
            return None
        url = body.get("URL") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url:
            self.violation(f"/layerDownloadURL for {digest}: no URL in {body!r}")
            return None
        blob = self.read_blob("layer GET", url, size, digest)
        if blob is None:
            return None
        raw = layerlib.decompress(blob)
        if layerlib.sha256_digest(raw) != diff_id:
            self.violation(f"layer {digest}: uncompressed digest is not its diffID {diff_id}")
            return None
        known = self.ledger.layers.get(digest)
        if known is not None and layerlib.read_origin(raw) != known.origin:
            self.violation(f"layer {digest}: content is not what was uploaded")
            return None
        self.stats.layers_downloaded += 1
        return raw

    def read_blob(self, name, url, size, digest):
        """Read like urlReaderAt under containerd, plus one deliberate jump: the second half
        first, then back to the start, so a server that ignores Range is caught."""
        reader = self.client.range_reader(name, url, size)
        data = bytearray(size)
        try:
            order = [size // 2, 0] if size > 1 else [0]
            ends = {size // 2: size, 0: size // 2} if size > 1 else {0: size}
            for start in order:
                offset = start
                while offset < ends[start]:
                    piece = reader.read_at(min(RANGE_PIECE, ends[start] - offset), offset)
                    if not piece:
                        break
                    data[offset : offset + len(piece)] = piece
                    offset += len(piece)
                if offset < ends[start]:
                    opened_at, status, _ = reader.opens[-1]
                    self.violation(f"{name} {digest}: Range bytes={opened_at}- answered {status} and ended at "
                                   f"{offset} of {size} bytes: {bytes(data[opened_at:offset][:120])!r}")
                    return None
        except (OSError, ProtocolError) as exc:
            self.violation(f"{name} {digest}: {exc}")
            return None
        finally:
            reader.close()
        self.stats.range_reopens += max(0, len(reader.opens) - 1)
        for offset, status, _ in reader.opens:
            if offset > 0 and status != 206:
                self.violation(f"{name} {digest}: Range bytes={offset}- answered {status}, not 206")
                return None
        blob = bytes(data)
        if layerlib.sha256_digest(blob) != digest:
            self.violation(f"{name} {digest}: downloaded bytes do not match the digest")
            return None
        return blob

    # --- export ------------------------------------------------------------------------------

    def export(self):
        """POST /records with the whole key store, push layers asked for, POST /layers."""
        payload = self.keys.records_payload()
        self.stats.records_posted += len(payload["CacheKeys"] or ())
        body = self.call("POST", "records", payload)
        if body is None:
            return
        records = body.get("ExportRecords") if isinstance(body, dict) else "not an object"
        if not isinstance(records, (list, type(None))):
            self.violation(f"/records: ExportRecords must be a list, got {records!r:.200}")
            return
        if not records:
            return  # nothing to export: the engine does not call /layers at all
        updated = []
        exported_idents = []
        pushed = set()
        for index, record in enumerate(records):
            if not isinstance(record, dict) or not isinstance(record.get("Digest"), str) \
                    or not isinstance(record.get("CacheRefID"), str) or not record.get("Digest"):
                self.violation(f"/records: ExportRecords[{index}] malformed: {record!r:.200}")
                continue
            entry = self.keys.by_ref.get(record["CacheRefID"])
            if entry is None:
                self.violation(f"/records: asked for ref {record['CacheRefID']} this engine never reported")
                continue
            if entry.id.startswith("random:"):
                self.violation(f"/records: asked to export {entry.op.description}, a random: key")
                continue
            if self.prune_every and index % self.prune_every == self.prune_every - 1:
                continue  # the ref was pruned meanwhile: the engine skips it silently
            chain = self.keys.chain(entry.op, entry.output)
            for layer in chain:
                if layer.digest in pushed:
                    continue
                if not self.push_layer(layer):
                    return  # a failed push aborts the engine's whole export
                pushed.add(layer.digest)
            updated.append({"RecordDigest": record["Digest"], "Layers": [layer.descriptor() for layer in chain]})
            if not depends_on_random(entry.op):
                exported_idents.append(entry.op.output_ident(entry.output))
        self.stats.exported_records += len(updated)
        # make([]RecordLayers, 0, n): an empty result is [] here, not null.
        try:
            # The engine never reads this answer.
            self.client.api("POST", "layers", {"UpdatedRecords": updated}, decode=False)
        except ProtocolError as exc:
            self.violation(str(exc))
            return
        with self.ledger.lock:
            self.ledger.exported.update(exported_idents)

    def push_layer(self, layer):
        body = self.call("GET", "layerUploadURL", {"Digest": layer.digest})
        if not isinstance(body, dict):
            if body is not None:
                self.violation(f"/layerUploadURL: not an object: {body!r:.200}")
            return False
        with self.ledger.lock:
            self.ledger.layers.setdefault(layer.digest, layer)
        if body.get("Skip") is True:
            self.stats.layers_skipped += 1
            return True
        url = body.get("URL")
        if not isinstance(url, str) or not url:
            self.violation(f"/layerUploadURL for {layer.digest}: no URL and no Skip: {body!r:.200}")
            return False
        try:
            self.client.put_blob("layer PUT", url, layer.blob, body.get("Headers"), exact_200=False)
        except ProtocolError as exc:
            self.violation(str(exc))
            return False
        self.stats.layers_uploaded += 1
        return True

    # --- cache mounts ------------------------------------------------------------------------

    def sync_mounts_down(self):
        body = self.call("GET", "cacheMountConfig", {})
        if body is None:
            return
        mounts = body.get("SyncedCacheMounts") if isinstance(body, dict) else "not an object"
        if mounts is None:
            return
        if not isinstance(mounts, list):
            self.violation(f"/cacheMountConfig: SyncedCacheMounts must be a list: {mounts!r:.200}")
            return
        for mount in mounts:
            if not isinstance(mount, dict) or not isinstance(mount.get("Name"), str):
                self.violation(f"/cacheMountConfig: malformed entry {mount!r:.200}")
                continue
            name = mount["Name"]
            if name not in self.mount_names or not mount.get("URL"):
                continue
            size, digest = mount.get("Size"), mount.get("Digest")
            if not isinstance(size, int) or not isinstance(digest, str):
                self.violation(f"/cacheMountConfig: {name}: Size/Digest malformed: {mount!r:.200}")
                continue
            if mount.get("MediaType") != layerlib.ZSTD_MEDIA_TYPE:
                self.violation(f"/cacheMountConfig: {name}: MediaType {mount.get('MediaType')!r}, uploaded as tar+zstd")
            blob = self.read_blob("mount GET", mount["URL"], size, digest)
            if blob is None:
                continue
            files = layerlib.read_files(layerlib.decompress(blob))
            with self.ledger.lock:
                known = self.ledger.mounts.get(name)
            if known is not None and known[0] == digest and known[1] != files:
                self.violation(f"cache mount {name}: downloaded files differ from what was uploaded")
                continue
            self.mount_files[name] = files
            self.stats.mounts_downloaded += 1

    def sync_mounts_up(self):
        """At shutdown: pack each used mount (what was there plus this engine's files)."""
        for name in self.mount_names:
            files = dict(self.mount_files.get(name, {}))
            files[f"{self.name}/{len(files):04d}.bin"] = self.rng.randbytes(self.rng.randrange(1024, 32768))
            blob = layerlib.compress(layerlib.build_tar(files))
            digest = layerlib.sha256_digest(blob)
            body = self.call("GET", "cacheMountUploadURL", {"CacheName": name, "Digest": digest, "Size": len(blob)})
            if not isinstance(body, dict):
                continue
            if body.get("Skip") is True:
                continue
            url = body.get("URL")
            if not isinstance(url, str) or not url:
                self.violation(f"/cacheMountUploadURL for {name}: no URL and no Skip: {body!r:.200}")
                continue
            try:
                self.client.put_blob("mount PUT", url, blob, body.get("Headers"), exact_200=True)
            except ProtocolError as exc:
                self.violation(str(exc))
                continue
            self.mount_files[name] = files
            self.stats.mounts_uploaded += 1
            with self.ledger.lock:
                self.ledger.mounts[name] = (digest, files)

    def close(self):
        self.client.close()
