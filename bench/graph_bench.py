#!/usr/bin/env python
"""Benchmark of /records and the /import rebuild through the real stack (gunicorn + Django),
each figure beside a floor this script measures in the same run.

    .venv/bin/python bench/graph_bench.py [--shape second]        # embedded SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/cw_graph_bench CACHEWEB_SECRET_KEY=dev \\
        .venv/bin/python bench/graph_bench.py                      # PostgreSQL

A graph of --keys keys (results on --results of them) is posted to /records: first post;
its results are attached through records.services (not timed); then the same body again
after that change (analysed again), the same body --cached-runs times more (steady: an
unchanged export), and --cached-runs bodies with 1 % new keys. Then the import is rebuilt
(records.importconfig.rebuild, in this process) --cached-runs times.

Floors, timed here with the same data:
- /records: orjson parse of the body + the record identities hashed over the keys in
  dependency order (records.graph._identity) + the one indexed lookup of them, as the
  32 bytes they are stored as (SELECT id, has_result FROM records_record WHERE
  organization_id = .. AND identity IN/ANY(..)); for the first post also COPY of the record and input rows into temp
  tables of the same shape (on SQLite, executemany INSERT);
- rebuild: orjson.dumps of the same config + gzip level 1.

Capacity: CPU-seconds of the web worker (/proc/<pid>/stat utime+stime) plus PostgreSQL's
backends connected to the benchmark's database, per steady post and per rebuild, and the
engines one 2-core machine carries at a 300 s export period.

Shapes: "bench" (10 % roots, 5,000 op digests repeated, --links links: second inputs and
alternatives) and "second" (2 % roots, a distinct op digest per key, every fifth key with
a second input).
"""

import argparse
import gc
import gzip
import hashlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def sha(text):
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _key_entries(ids, n_results, rng, tag=""):
    with_results = set(rng.sample(range(len(ids)), n_results))
    keys = []
    for n, key_id in enumerate(ids):
        results = None
        if n in with_results:
            results = [
                {"ID": f"ref{tag}{n:08d}xxxxxxxxxxxxxxxx", "CreatedAt": "2026-11-27T10:00:00.123456789Z",
                 "Description": f"exec step {tag}{n}"}
            ]
        keys.append({"ID": key_id, "Results": results})
    return keys


def make_graph(n_keys, n_links, n_results, shape="bench", seed=1):
    """Roots, then dependent keys: every non-root key has one link to an earlier key;
    "bench" spends the remaining links on second inputs or alternatives, "second" gives
    every fifth key a second input."""
    rng = random.Random(seed)
    n_roots = max(1, n_keys // (10 if shape == "bench" else 50))
    ids = [sha(f"root {n}@0") if n < n_roots else "".join(rng.choices(ALPHABET, k=25)) for n in range(n_keys)]
    links = []
    digest_of = {}
    for n in range(n_roots, n_keys):
        digest_of[n] = sha(f"op {n % 5000}@{n % 2}") if shape == "bench" else sha(f"op {n}")
        links.append({"ID": ids[n], "LinkedID": ids[rng.randrange(n)], "Input": 0, "Digest": digest_of[n], "Selector": ""})
    if shape == "bench":
        for _ in range(n_links - (n_keys - n_roots)):
            n = rng.randrange(n_roots, n_keys)
            second = rng.random() < 0.5
            links.append(
                {"ID": ids[n], "LinkedID": ids[rng.randrange(n)], "Input": 0, "Digest": digest_of[n],
                 "Selector": sha("selector") if second else ""}
            )
    else:
        for n in range(n_roots, n_keys, 5):
            links.append({"ID": ids[n], "LinkedID": ids[rng.randrange(n)], "Input": 1, "Digest": digest_of[n], "Selector": ""})
    return {"CacheKeys": _key_entries(ids, n_results, rng), "Links": links}


def with_new_keys(payload, fraction, seed):
    """The payload plus fraction * keys new keys, each built on an existing key, half of
    them with a result (a build that ran since the last export)."""
    rng = random.Random(1000 + seed)
    old_ids = [entry["ID"] for entry in payload["CacheKeys"]]
    count = max(1, int(len(old_ids) * fraction))
    ids = ["".join(rng.choices(ALPHABET, k=25)) for _ in range(count)]
    links = [
        {"ID": key_id, "LinkedID": rng.choice(old_ids), "Input": 0, "Digest": sha(f"new op {seed} {n}"), "Selector": ""}
        for n, key_id in enumerate(ids)
    ]
    keys = _key_entries(ids, count // 2, rng, tag=f"n{seed}-")
    return {"CacheKeys": payload["CacheKeys"] + keys, "Links": payload["Links"] + links}


def peak_rss_mb(master_pid):
    """Highest VmHWM among gunicorn's master and workers."""
    pids = [master_pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    except FileNotFoundError:
        pass
    peak = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) // 1024)
        except FileNotFoundError:
            continue
    return peak


def chunks(body, size=64 * 1024):
    # A generator body makes requests send it chunked, as the engine's io.Pipe does.
    for start in range(0, len(body), size):
        yield body[start : start + size]


def cpu_of(pid):
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def postgres_backends(db_name):
    """Pids of the PostgreSQL backends connected to `db_name` (their title names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres:") and f" {db_name} " in title:
            pids.append(int(entry.name))
    return pids


class CPUMeter:
    """CPU-seconds of the given processes plus the database's backends, between marks."""

    def __init__(self, pids, db_name):
        self.pids = pids
        self.db_name = db_name

    def sample(self):
        pids = list(self.pids()) + (postgres_backends(self.db_name) if self.db_name else [])
        return {pid: cpu_of(pid) for pid in pids}

    @staticmethod
    def delta(before, after):
        # A backend that started in between counts from zero.
        return sum(after[pid] - before.get(pid, 0.0) for pid in after)


def hashing_plan(payload):
    """For the floor: the kept keys in dependency order with their digest and inputs
    (per index, the (selector, linked key) alternatives), as records.graph sees them."""
    from records.graph import analyse, parse_payload

    graph = analyse(parse_payload(payload))
    inputs = {}
    digests = {}
    for link in payload["Links"]:
        digests[link["ID"]] = link["Digest"]
        inputs.setdefault(link["ID"], {}).setdefault(link["Input"], set()).add((link.get("Selector") or "", link["LinkedID"]))
    plan = []
    for key_id in graph.identities:
        per_index = inputs.get(key_id)
        if per_index is None:
            plan.append((key_id, key_id, ()))
        else:
            plan.append((key_id, digests[key_id], tuple(tuple(per_index[i]) for i in range(len(per_index)))))
    return graph, plan


def floor_hash(plan):
    from records.graph import _identity

    identities = {}
    for key_id, digest, inputs in plan:
        resolved = tuple(tuple(sorted({(sel, identities[linked]) for sel, linked in alts})) for alts in inputs)
        identities[key_id] = _identity(digest, resolved)
    return identities


def floor_lookup(organization_id, identities):
    from django.db import connection

    from records.fields import to_bytes

    # As stored (records.fields.DigestBytesField): compared as text, nothing would match
    # and the floor would skip fetching the rows.
    identities = [to_bytes(identity) for identity in set(identities)]
    rows = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT id, has_result FROM records_record WHERE organization_id = %s AND identity = ANY(%s)",
                [organization_id, identities],
            )
            rows = cursor.fetchall()
        else:
            for start in range(0, len(identities), 900):
                chunk = identities[start : start + 900]
                cursor.execute(
                    "SELECT id, has_result FROM records_record WHERE organization_id = %s AND identity IN "
                    f"({','.join(['%s'] * len(chunk))})",
                    [organization_id, *chunk],
                )
                rows += cursor.fetchall()
    return rows


def floor_copy(organization_id, graph):
    """COPY the first post's record and input rows into empty temp tables shaped like
    records_record and records_recordinput (same columns, same indexes)."""
    from django.db import connection
    from django.utils import timezone

    now = timezone.now()
    ids = {identity: n + 1 for n, identity in enumerate(graph.records)}
    records = [
        (ids[identity], organization_id, identity, digest, len(inputs), graph.descriptions.get(identity, ""), False, now)
        for identity, (digest, inputs) in graph.records.items()
    ]
    inputs = [
        (n, organization_id, ids[identity], index, selector, ids[source])
        for n, (identity, index, selector, source) in enumerate(
            (identity, index, selector, source)
            for identity, (_, alternatives) in graph.records.items()
            for index, alts in enumerate(alternatives)
            for selector, source in alts
        )
    ]
    rec_cols = "id, organization_id, identity, digest, input_count, description, has_result, created_at"
    in_cols = 'id, organization_id, record_id, "index", selector, source_id'
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("CREATE TEMP TABLE bench_record (LIKE records_record INCLUDING ALL)")
            cursor.execute("CREATE TEMP TABLE bench_input (LIKE records_recordinput INCLUDING ALL)")
            with cursor.cursor.copy(f"COPY bench_record ({rec_cols}) FROM STDIN") as copy:
                for row in records:
                    copy.write_row(row)
            with cursor.cursor.copy(f"COPY bench_input ({in_cols}) FROM STDIN") as copy:
                for row in inputs:
                    copy.write_row(row)
        else:
            cursor.execute("CREATE TEMP TABLE bench_record AS SELECT * FROM records_record WHERE 0")
            cursor.execute("CREATE UNIQUE INDEX temp.bench_record_u ON bench_record (organization_id, identity)")
            cursor.execute("CREATE TEMP TABLE bench_input AS SELECT * FROM records_recordinput WHERE 0")
            cursor.execute(
                'CREATE UNIQUE INDEX temp.bench_input_u ON bench_input (record_id, "index", selector, source_id)'
            )
            cursor.executemany(f"INSERT INTO bench_record ({rec_cols}) VALUES ({','.join(['%s'] * 8)})", records)
            cursor.executemany(f"INSERT INTO bench_input ({in_cols}) VALUES ({','.join(['%s'] * 6)})", inputs)
    return len(records), len(inputs)


def drop_copy_tables():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_record")
        cursor.execute("DROP TABLE IF EXISTS bench_input")


def records_floor(meter, organization_id, body, plan, graph=None):
    """(seconds, cpu-seconds) of the floor for posting `body` (with `graph`: a first post,
    COPY included); cpu is this process's plus the database backends'."""
    # The cyclic collector paused, as the service does while it parses (services.gc_paused).
    gc.disable()
    try:
        before = meter.sample()
        wall = _records_floor(organization_id, body, plan, graph)
        return wall, CPUMeter.delta(before, meter.sample())
    finally:
        gc.enable()


def _records_floor(organization_id, body, plan, graph):
    from django.db import transaction

    started = time.monotonic()
    orjson.loads(body)
    identities = list(floor_hash(plan).values())
    found = floor_lookup(organization_id, identities)
    if graph is None and not found:
        raise SystemExit("the floor's lookup found none of the stored records: the floor would be too low")
    if graph is not None:
        with transaction.atomic():
            floor_copy(organization_id, graph)
            elapsed = time.monotonic() - started
            transaction.set_rollback(True)
        drop_copy_tables()
        return elapsed
    return time.monotonic() - started


def line(label, seconds, floor, cpu=None, floor_cpu=None, extra=""):
    text = f"{label:<33} {seconds:6.3f} s  floor {floor:6.3f} s  ratio {seconds / floor:5.2f}x"
    if cpu is not None:
        text += f" | cpu {cpu:6.3f} s  floor {floor_cpu:6.3f} s  ratio {cpu / floor_cpu:5.2f}x"
    print(text + extra)


def runs(label, pairs, extra=""):
    """Medians of [(post wall, post cpu, floor wall, floor cpu)], each floor timed beside its post."""
    med = [statistics.median(p[i] for p in pairs) for i in range(4)]
    line(label, med[0], med[2], med[1], med[3], f"{extra} (median of {len(pairs)})")
    return med


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--links", type=int, default=60_000, help="for --shape bench")
    parser.add_argument("--results", type=int, default=40_000)
    parser.add_argument("--shape", choices=("bench", "second"), default="bench")
    parser.add_argument("--cached-runs", type=int, default=3)
    parser.add_argument("--period", type=int, default=300, help="the engines' export period, seconds")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()

    data_dir = os.environ.get("CACHEWEB_DATA_DIR") or tempfile.mkdtemp(prefix="cw-graph-bench-")
    os.environ["CACHEWEB_DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cacheweb.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction

    from accounts.models import EngineToken, Organization
    from blobs.models import Blob
    from blobs.storage import get_store
    from records import importconfig, services

    call_command("migrate", verbosity=0)
    org = Organization.ensure(f"bench-{int(time.time())}-{os.getpid()}")
    token_row, token = EngineToken.issue(org, label="bench")
    db_name = settings.DATABASES["default"]["NAME"] if connection.vendor == "postgresql" else None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}; database: {connection.vendor} ({settings.DATABASES['default']['NAME']}); shape {args.shape}")
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")

    payload = make_graph(args.keys, args.links, args.results, args.shape)
    body = orjson.dumps(payload) + b"\n"
    graph, plan = hashing_plan(payload)
    print(
        f"graph: {len(payload['CacheKeys'])} keys, {len(payload['Links'])} links, {args.results} results, "
        f"{len(graph.records)} records, body {len(body) / 1e6:.1f} MB"
    )

    port = 18000 + os.getpid() % 1000
    env = dict(os.environ, CACHEWEB_BIND=f"127.0.0.1:{port}", CACHEWEB_WEB_WORKERS="1")
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "cacheweb.wsgi:application", "--config", "python:cacheweb.gunicorn_conf"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(Path(data_dir) / "gunicorn.log", "wb"),
    )

    def web_pids():
        out = subprocess.run(["pgrep", "-P", str(web.pid)], capture_output=True, text=True).stdout
        return [web.pid, *map(int, out.split())]

    served = CPUMeter(web_pids, db_name)
    here = CPUMeter(lambda: [os.getpid()], db_name)
    base = f"http://127.0.0.1:{port}/magicache"
    session = requests.Session()
    session.auth = (token, "")
    try:
        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.2)

        def post_records(data):
            before = served.sample()
            started = time.monotonic()
            response = session.post(base + "/records", data=chunks(data), headers={"Content-Type": "application/json"})
            elapsed = time.monotonic() - started
            response.raise_for_status()
            return elapsed, CPUMeter.delta(before, served.sample()), len(response.json()["ExportRecords"])

        first_floor, first_floor_cpu = records_floor(here, org.pk, body, plan, graph)
        first, first_cpu, asked = post_records(body)
        line("first /records post", first, first_floor, first_cpu, first_floor_cpu, f"  ExportRecords {asked}")

        # Results for the keys that have them, through the service (not timed): the
        # endpoint would need one export round per EXPORT_RECORDS_MAX records.
        blobs = []
        updated = []
        for n, identity in enumerate(sorted(graph.results)):
            chain = [sha(f"base {n % 50}"), sha(f"blob {n}")]
            blobs += chain
            updated.append(
                {
                    "RecordDigest": identity,
                    "Layers": [
                        {
                            "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
                            "digest": d,
                            "size": 1000,
                            "annotations": {"containerd.io/uncompressed": sha("diff" + d)},
                        }
                        for d in chain
                    ],
                }
            )
        Blob.objects.bulk_create(
            [Blob(organization=org, digest=d, size=1000, state="verified") for d in set(blobs)],
            ignore_conflicts=True,
            batch_size=2000,
        )
        store = get_store()
        if store.kind == "filesystem":
            # The blob app checks that a verified blob's file is there, with its size.
            for digest in set(blobs):
                path = Path(store.path(org.pk, digest))
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"\0" * 1000)
        answer, _ = services.update_layers(org, token_row, {"UpdatedRecords": updated})
        print(f"(setup) {len(answer['Accepted'])} results attached")

        def with_floor(data, data_plan):
            wall, cpu, asked = post_records(data)
            return (wall, cpu, *records_floor(here, org.pk, data, data_plan)), asked

        changed, asked = with_floor(body, plan)
        changed_cpu = changed[1]
        line("same body, results changed since", *changed[:1], changed[2], changed[1], changed[3], f"  ExportRecords {asked}")
        steady = [with_floor(body, plan) for _ in range(args.cached_runs)]
        steady_cpu = runs("identical re-post (steady)", [p for p, _ in steady], f"  ExportRecords {steady[-1][1]}")[1]

        new_runs = []
        for n in range(args.cached_runs):
            grown = with_new_keys(payload, 0.01, n)
            grown_body = orjson.dumps(grown) + b"\n"
            _, grown_plan = hashing_plan(grown)
            new_runs.append(with_floor(grown_body, grown_plan))
        runs("re-post with 1 % new keys", [p for p, _ in new_runs], f"  ExportRecords {new_runs[-1][1]}")

        rebuilds = []
        for _ in range(args.cached_runs):
            with transaction.atomic():
                services.mark_changed(org)
            before = here.sample()
            started = time.monotonic()
            importconfig.rebuild(org, force=True)
            rebuilds.append((time.monotonic() - started, CPUMeter.delta(before, here.sample())))
        snapshot = org.import_snapshot
        snapshot.refresh_from_db()
        config = orjson.loads(gzip.decompress(bytes(snapshot.body_gzip)))
        rebuild_floors = []
        for _ in range(args.cached_runs):
            started, cpu_started = time.monotonic(), time.process_time()
            gzip.compress(orjson.dumps(config), 1)
            rebuild_floors.append((time.monotonic() - started, time.process_time() - cpu_started))
        pairs = [(*r, *f) for r, f in zip(rebuilds, rebuild_floors)]
        rebuild_cpu = runs(
            "/import rebuild", pairs, f"  {len(config['records'])} records, {len(config['layers'])} layers"
        )[1]

        budget = args.cores * args.period
        print(
            f"capacity ({args.cores} cores, {args.period} s period; cpu = web worker"
            f"{' + PostgreSQL backends' if db_name else ''}):"
        )
        print(f"  steady /records {steady_cpu:.3f} cpu-s per post: {budget / steady_cpu:,.0f} engines")
        print(
            f"  each export changes the import: {changed_cpu:.2f} cpu-s per post + {rebuild_cpu:.2f} per rebuild: "
            f"{budget / (changed_cpu + rebuild_cpu):,.0f} engines"
        )
        print(f"peak RSS of the web process: {peak_rss_mb(web.pid)} MB")
    finally:
        web.terminate()
        web.wait(timeout=30)


if __name__ == "__main__":
    main()
