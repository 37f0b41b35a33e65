#!/usr/bin/env python
"""Benchmark of the build steps pages on a big organization.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/cw_steps_bench CACHEWEB_SECRET_KEY=dev \\
        .venv/bin/python bench/steps_bench.py                  # PostgreSQL
    .venv/bin/python bench/steps_bench.py                      # embedded SQLite

Fills one organization with --records records (a tenth of them roots, the rest with one or
two inputs), --results of them with a complete result of one to four layers (bases shared
by many), a blob per layer (a third downloaded), 200 engines and descriptions that repeat
(the same `go build` on other sources). Then renders each page through Django's full
stack in-process (middleware, session, view, template), as a logged-in superuser, and
prints the median and slowest of --runs runs after one warm-up.
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VERBS = ["exec go build ./...", "exec go test ./...", "copy go.mod go.sum /app/", "exec npm ci", "exec make",
         "copy . /src/", "exec apt-get install -y git", "exec cargo build --release"]


def fill(org, n_records, n_results, seed=7):
    from django.utils import timezone

    from accounts.models import Engine
    from blobs.models import Blob
    from records.models import Layer, Record, RecordInput, Result, ResultLayer

    rng = random.Random(seed)
    now = timezone.now()
    engines = Engine.objects.bulk_create(
        [Engine(organization=org, engine_id=f"runner-{n:03d}") for n in range(200)]
    )
    n_roots = n_records // 10

    def digest(kind, n):
        return f"sha256:{rng.getrandbits(256):064x}" if kind == "random" else f"sha256:{hash((kind, n)) & (2**256 - 1):064x}"

    records = [
        Record(
            organization=org,
            identity=digest("random", n),
            digest=digest("random", n),
            input_count=0 if n < n_roots else 1,
            description=(f"pull docker.io/library/image-{n % 300}:latest" if n < n_roots else f"{rng.choice(VERBS)} #{n % 2000}"),
            has_result=n >= n_records - n_results,
            created_at=now - timedelta(minutes=n_records - n),
        )
        for n in range(n_records)
    ]
    records = Record.objects.bulk_create(records, batch_size=5000)
    inputs = []
    for n in range(n_roots, n_records):
        inputs.append(RecordInput(organization=org, record=records[n], index=0, selector="", source=records[rng.randrange(n)]))
        if n % 5 == 0:
            inputs.append(RecordInput(organization=org, record=records[n], index=1, selector="", source=records[rng.randrange(n)]))
    RecordInput.objects.bulk_create(inputs, batch_size=5000)

    base_layers = [
        Layer(organization=org, digest=digest("random", 0), media_type="application/vnd.oci.image.layer.v1.tar+zstd",
              size=rng.randrange(10_000_000, 300_000_000), diff_id=digest("random", 0))
        for _ in range(500)
    ]
    base_layers = Layer.objects.bulk_create(base_layers, batch_size=5000)
    own_layers = Layer.objects.bulk_create(
        [
            Layer(organization=org, digest=digest("random", 0), media_type="application/vnd.oci.image.layer.v1.tar+zstd",
                  size=rng.randrange(1_000, 50_000_000), diff_id=digest("random", 0))
            for _ in range(n_results)
        ],
        batch_size=5000,
    )
    results = []
    chains = []
    for i, record in enumerate(records[n_records - n_results :]):
        chain = rng.sample(base_layers, rng.randrange(0, 4)) + [own_layers[i]]
        chains.append(chain)
        results.append(
            Result(
                record=record, chain=digest("random", 0), complete=True, created_at=now - timedelta(hours=i % 1000),
                exported_at=now - timedelta(minutes=i), engine=engines[i % 200], description=record.description,
                size=chain[-1].size, chain_size=sum(layer.size for layer in chain), layer_count=len(chain),
                top_digest=chain[-1].digest,
                last_used_at=(now - timedelta(minutes=500 + i)) if (500 + i) % 3 == 0 else None,
            )
        )
    results = Result.objects.bulk_create(results, batch_size=5000)
    ResultLayer.objects.bulk_create(
        [ResultLayer(result=result, position=p, layer=layer) for result, chain in zip(results, chains) for p, layer in enumerate(chain)],
        batch_size=5000,
    )
    Blob.objects.bulk_create(
        [
            Blob(organization=org, digest=layer.digest, size=layer.size, state="verified", verified_at=now,
                 last_used_at=(now - timedelta(minutes=n)) if n % 3 == 0 else None, use_count=1 if n % 3 == 0 else 0)
            for n, layer in enumerate(base_layers + own_layers)
        ],
        batch_size=5000,
    )
    return records, results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--results", type=int, default=40_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    os.environ.setdefault("CACHEWEB_DATA_DIR", tempfile.mkdtemp(prefix="cw-steps-bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cacheweb.settings")
    os.environ["CACHEWEB_ALLOWED_HOSTS"] = "testserver"
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from accounts.models import Organization

    call_command("migrate", verbosity=0)
    org = Organization.ensure(f"bench-{int(time.time())}")
    started = time.perf_counter()
    records, results = fill(org, args.records, args.results)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    print(f"database: {connection.vendor} ({settings.DATABASES['default']['NAME']})")
    print(f"organization: {args.records} records, {args.results} results, filled in {time.perf_counter() - started:.1f} s")

    user, _ = get_user_model().objects.get_or_create(username="bench-admin", defaults={"is_superuser": True, "is_staff": True})
    client = Client()
    client.force_login(user)
    base = f"/orgs/{org.slug}/cache"
    step = results[len(results) // 2].record_id
    layer_digest = results[len(results) // 2].top_digest
    pages = [
        ("steps, newest first", f"{base}/steps/"),
        ("steps by own size", f"{base}/steps/?sort=-size"),
        ("steps by chain size", f"{base}/steps/?sort=-total_size"),
        ("steps by last use", f"{base}/steps/?sort=-last_used"),
        ("steps, page 400", f"{base}/steps/?page=400"),
        ("search 'go build'", f"{base}/steps/?q=go+build"),
        ("search, rare text", f"{base}/steps/?q=%231999"),
        ("digest prefix", f"{base}/steps/?digest={records[-5].digest[7:15]}"),
        ("never used, 30 days old", f"{base}/steps/?used=no&min_age_days=30"),
        ("one engine's steps", f"{base}/steps/?engine={results[0].engine_id}"),
        ("steps with a layer", f"{base}/steps/?layer={layer_digest}"),
        ("a step's page", f"{base}/steps/{step}/"),
        ("cache overview", f"{base}/"),
        ("bulk evict preview 'go test'", f"{base}/steps/evict?q=go+test"),
    ]
    print(f"{'page':<32} {'median ms':>10} {'max ms':>8}  rows")
    for name, url in pages:
        times = []
        for run in range(args.runs + 1):
            t0 = time.perf_counter()
            response = client.get(url)
            elapsed = (time.perf_counter() - t0) * 1000
            assert response.status_code == 200, (url, response.status_code)
            if run:
                times.append(elapsed)
        shown = response.content.count(b"<tr data-step=")
        print(f"{name:<32} {statistics.median(times):>10.1f} {max(times):>8.1f}  {shown}")
    org.delete()


if __name__ == "__main__":
    main()
