#!/usr/bin/env python
"""Benchmark of the cache graph endpoints through the real stack (gunicorn + Django).

    .venv/bin/python bench/graph_bench.py                      # embedded SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/cw_graph_bench CACHEWEB_SECRET_KEY=dev \\
        .venv/bin/python bench/graph_bench.py                  # PostgreSQL

A graph of --keys keys and --links links (results on --results of them) is posted to
/records twice (first post, then unchanged), its results are attached (through
records.services, not timed), it is posted once more (nothing left to ask for), then /import is fetched stale (rebuilt) and fresh (served
from the stored copy). Prints the figures and the web worker's peak RSS.
"""

import argparse
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


def sha(text):
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def make_graph(n_keys, n_links, n_results, seed=1):
    """Roots, then layers of dependent keys: every non-root key has one link to an earlier
    key; the remaining links are second inputs or alternatives."""
    rng = random.Random(seed)
    n_roots = max(1, n_keys // 10)
    ids = []
    keys = []
    links = []
    for n in range(n_keys):
        key_id = sha(f"root {n}@0") if n < n_roots else "".join(rng.choices("0123456789abcdefghijklmnopqrstuvwxyz", k=25))
        ids.append(key_id)
    digest_of = {}
    extra = n_links - (n_keys - n_roots)
    for n in range(n_roots, n_keys):
        digest_of[n] = sha(f"op {n % 5000}@{n % 2}")
        links.append({"ID": ids[n], "LinkedID": ids[rng.randrange(n)], "Input": 0, "Digest": digest_of[n], "Selector": ""})
    for _ in range(extra):
        n = rng.randrange(n_roots, n_keys)
        second = rng.random() < 0.5
        links.append(
            {
                "ID": ids[n],
                "LinkedID": ids[rng.randrange(n)],
                "Input": 0,
                "Digest": digest_of[n],
                "Selector": sha("selector") if second else "",
            }
        )
    with_results = set(rng.sample(range(n_keys), n_results))
    for n, key_id in enumerate(ids):
        results = None
        if n in with_results:
            results = [
                {"ID": f"ref{n:08d}xxxxxxxxxxxxxxxx", "CreatedAt": "2026-11-27T10:00:00.123456789Z", "Description": f"exec step {n}"}
            ]
        keys.append({"ID": key_id, "Results": results})
    return {"CacheKeys": keys, "Links": links}


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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--links", type=int, default=60_000)
    parser.add_argument("--results", type=int, default=40_000)
    parser.add_argument("--cached-runs", type=int, default=20)
    args = parser.parse_args()

    data_dir = os.environ.get("CACHEWEB_DATA_DIR") or tempfile.mkdtemp(prefix="cw-graph-bench-")
    os.environ["CACHEWEB_DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cacheweb.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from accounts.models import EngineToken, Organization
    from blobs.models import Blob
    from blobs.storage import get_store
    from records import services

    call_command("migrate", verbosity=0)
    org = Organization.ensure(f"bench-{int(time.time())}")
    token_row, token = EngineToken.issue(org, label="bench")
    print(f"database: {connection.vendor} ({settings.DATABASES['default']['NAME']}), data dir {data_dir}")

    payload = make_graph(args.keys, args.links, args.results)
    body = orjson.dumps(payload) + b"\n"
    print(f"graph: {len(payload['CacheKeys'])} keys, {len(payload['Links'])} links, {args.results} results, body {len(body) / 1e6:.1f} MB")

    port = 18000 + os.getpid() % 1000
    env = dict(os.environ, CACHEWEB_BIND=f"127.0.0.1:{port}", CACHEWEB_WEB_WORKERS="1")
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "cacheweb.wsgi:application", "--config", "python:cacheweb.gunicorn_conf"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(Path(data_dir) / "gunicorn.log", "wb"),
    )
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

        def post_records():
            started = time.monotonic()
            response = session.post(base + "/records", data=chunks(body), headers={"Content-Type": "application/json"})
            elapsed = time.monotonic() - started
            response.raise_for_status()
            return elapsed, len(response.json()["ExportRecords"])

        first, asked = post_records()
        print(f"first /records post: {first:.2f} s (ExportRecords: {asked}; web peak RSS so far {peak_rss_mb(web.pid)} MB)")
        again, asked = post_records()
        print(f"same graph again:    {again:.2f} s (ExportRecords: {asked})")

        # Results for the keys that have them, through the service (not timed): the
        # endpoint would need one export round per EXPORT_RECORDS_MAX records.
        from records.graph import analyse, parse_payload

        graph = analyse(parse_payload(payload))
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
        started = time.monotonic()
        answer, _ = services.update_layers(org, token_row, {"UpdatedRecords": updated})
        print(f"(setup) {len(answer['Accepted'])} results attached in {time.monotonic() - started:.1f} s")

        steady, asked = post_records()
        print(f"again, all results stored: {steady:.2f} s (ExportRecords: {asked}; web peak RSS so far {peak_rss_mb(web.pid)} MB)")

        started = time.monotonic()
        response = session.get(base + "/import", headers={"Accept-Encoding": "gzip"})
        rebuild = time.monotonic() - started
        response.raise_for_status()
        config = response.json()
        print(
            f"/import rebuilt:     {rebuild * 1000:.0f} ms ({len(config['records'])} records, "
            f"{len(config['layers'])} layers, {len(response.content) / 1e6:.1f} MB json)"
        )
        cached = []
        for _ in range(args.cached_runs):
            started = time.monotonic()
            response = session.get(base + "/import", headers={"Accept-Encoding": "gzip"}, stream=True)
            raw = response.raw.read()
            cached.append(time.monotonic() - started)
            response.raise_for_status()
        print(
            f"/import cached:      median {statistics.median(cached) * 1000:.1f} ms, "
            f"max {max(cached) * 1000:.1f} ms ({len(raw) / 1e6:.2f} MB gzip)"
        )
        print(f"peak RSS of the web process: {peak_rss_mb(web.pid)} MB")
    finally:
        web.terminate()
        web.wait(timeout=30)


if __name__ == "__main__":
    main()
