#!/usr/bin/env python
"""Time an /import rebuild beside its floor, measured in the same process and run.

    .venv/bin/python bench/import_bench.py                        # embedded SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/cw_imp CACHEWEB_SECRET_KEY=dev \\
        .venv/bin/python bench/import_bench.py --before /tmp/imp-before

A graph of --keys keys (bench/graph_bench.py's make_graph) is stored through
records.services with results on --results of them (two-layer chains, blobs verified and
on disk), then `importconfig.rebuild` is timed, the generation bumped before each run so
that every run builds. The floor is what any rebuild must do at least: orjson.dumps of the
same config (parsed from the body just built, so the same objects for every tree) and
gzip at level 1, timed right after each rebuild in the same process. Wall and CPU time
(this process's: PostgreSQL's own CPU is not in it) are reported beside their floors.
--reuse SLUG times the rows an earlier run stored (its slug is printed) instead of
storing new ones.
With --before PATH (a checkout of another commit, e.g. made by `git worktree add`), the
rebuild of that tree's code is timed on the same rows in turns with this tree's, each in a
child process, and the bodies are compared (byte-identical output is expected).
"""

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django(tree):
    sys.path.insert(0, str(tree))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cacheweb.settings")
    import django

    django.setup()


def make_rows(args):
    """Store the graph and its results for a new organization; its slug."""
    from django.core.management import call_command

    from accounts.models import EngineToken, Organization
    from blobs.models import Blob
    from blobs.storage import get_store
    from records import services

    sys.path.insert(0, str(ROOT / "bench"))
    from graph_bench import make_graph, sha

    call_command("migrate", verbosity=0)
    org = Organization.ensure(f"import-bench-{int(time.time())}")
    token, _ = EngineToken.issue(org, label="bench")
    payload = make_graph(args.keys, args.links, args.results)
    _, graph, _ = services.update_records(org, token, payload)
    blobs = set()
    updated = []
    for n, identity in enumerate(sorted(graph.results)):
        chain = [sha(f"base {n % 50}"), sha(f"blob {n}")]
        blobs.update(chain)
        updated.append(
            {
                "RecordDigest": identity,
                "Layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
                        "digest": digest,
                        "size": 1000,
                        "annotations": {"containerd.io/uncompressed": sha("diff" + digest)},
                    }
                    for digest in chain
                ],
            }
        )
    Blob.objects.bulk_create(
        [Blob(organization=org, digest=digest, size=1000, state="verified") for digest in blobs],
        ignore_conflicts=True,
        batch_size=2000,
    )
    store = get_store()
    if store.kind == "filesystem":
        # The code before this change stats every layer's file on /import.
        for digest in blobs:
            path = Path(store.path(org.pk, digest))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\0" * 1000)
    services.update_layers(org, token, {"UpdatedRecords": updated})
    from django.db import connection

    if connection.vendor == "postgresql":
        # What autovacuum does soon after a bulk load: without statistics for the new
        # rows the planner picks nested loops, and a rebuild times out.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return org.slug


def time_rebuilds(slug, runs):
    """{"rebuild", "floor", "rebuild_cpu", "floor_cpu": [s], "etag", "records", "layers"}
    for this process's code. CPU is this process's (PostgreSQL's own is not in it)."""
    import orjson
    from django.db.models import F

    from accounts.models import Organization
    from records import importconfig
    from records.models import ImportSnapshot

    org = Organization.objects.get(slug=slug)
    figures = {"rebuild": [], "floor": [], "rebuild_cpu": [], "floor_cpu": []}
    built = None
    for _ in range(runs):
        ImportSnapshot.objects.filter(organization=org).update(generation=F("generation") + 1, building_since=None)
        started, cpu = time.perf_counter(), time.process_time()
        built = importconfig.rebuild(org)
        figures["rebuild"].append(time.perf_counter() - started)
        figures["rebuild_cpu"].append(time.process_time() - cpu)
        assert built is not None, "nothing was built"
        # The same config parsed from the body, whichever tree built it: the floor of
        # both trees is then measured on equal objects (a dict built from database rows
        # and one orjson parsed do not dump equally fast).
        config = orjson.loads(built.body)
        started, cpu = time.perf_counter(), time.process_time()
        body = orjson.dumps(config)
        gzip.compress(body, 1, mtime=0)
        figures["floor"].append(time.perf_counter() - started)
        figures["floor_cpu"].append(time.process_time() - cpu)
        assert body == built.body, "the floor's JSON differs from the rebuild's"
    return figures | {"etag": built.etag, "records": built.records, "layers": built.layers}


def child(tree, slug, runs):
    command = [sys.executable, str(Path(__file__).resolve()), "--tree", str(tree), "--slug", slug, "--runs", str(runs)]
    output = subprocess.run(command, cwd=tree, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def report(label, figures):
    for kind, suffix in (("wall", ""), ("cpu", "_cpu")):
        rebuild = statistics.median(figures["rebuild" + suffix])
        floor = statistics.median(figures["floor" + suffix])
        print(
            f"{label:>7} {kind:>4}: rebuild median {rebuild * 1000:7.0f} ms, floor (orjson + gzip 1) "
            f"{floor * 1000:6.0f} ms, ratio {rebuild / floor:5.2f}x  "
            f"(runs {', '.join(f'{s * 1000:.0f}' for s in figures['rebuild' + suffix])} ms)"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--links", type=int, default=60_000)
    parser.add_argument("--results", type=int, default=40_000)
    parser.add_argument("--runs", type=int, default=3, help="rebuilds timed per tree and turn")
    parser.add_argument("--turns", type=int, default=2, help="with --before: turns of before, after")
    parser.add_argument("--before", type=Path, help="a checkout whose rebuild to time on the same rows")
    parser.add_argument("--reuse", metavar="SLUG", help="time the rows an earlier run stored for SLUG")
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--slug", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.tree:  # a child: time this tree's code on the rows named
        setup_django(args.tree)
        print(json.dumps(time_rebuilds(args.slug, args.runs)))
        return

    os.environ.setdefault("CACHEWEB_DATA_DIR", tempfile.mkdtemp(prefix="cw-import-bench-"))
    setup_django(ROOT)
    from django.conf import settings
    from django.db import connection

    print(f"load average before: {os.getloadavg()}")
    started = time.monotonic()
    slug = args.reuse or make_rows(args)
    print(
        f"database: {connection.vendor} ({settings.DATABASES['default']['NAME']}); organization {slug}; "
        + ("rows of an earlier run" if args.reuse else f"graph {args.keys} keys, {args.links} links, "
           f"{args.results} results (stored in {time.monotonic() - started:.0f} s)")
    )
    trees = [("before", args.before.resolve()), ("after", ROOT)] if args.before else [("after", ROOT)]
    totals = {label: {"rebuild": [], "floor": [], "rebuild_cpu": [], "floor_cpu": []} for label, _ in trees}
    etags = {}
    for _ in range(args.turns if args.before else 1):
        for label, tree in trees:
            figures = child(tree, slug, args.runs)
            for kind in totals[label]:
                totals[label][kind] += figures[kind]
            etags[label] = figures["etag"]
    print(f"import: {figures['records']} records, {figures['layers']} layers; load average {os.getloadavg()}")
    for label, _ in trees:
        report(label, totals[label])
    if args.before:
        same = etags["before"] == etags["after"]
        print(f"bodies byte-identical before/after: {'yes' if same else 'NO'} ({etags['after']})")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
