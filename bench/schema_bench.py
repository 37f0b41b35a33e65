#!/usr/bin/env python
"""What a first /records post costs the database: the graph schema and its bulk writes.

    .venv/bin/python bench/schema_bench.py [--root CHECKOUT] [--keys 50000 --links 60000]

Creates a fresh PostgreSQL database (cw_pg_bench_<pid> on --server), migrates it with the
code of --root (default: this checkout; give another checkout, e.g. an older commit, to
measure it with the same script), and calls records.services.update_records in-process
with bench/graph_bench.py's graph, once. Prints the wall time, this process's CPU (the web
worker's share), the CPU of this connection's PostgreSQL backend and of all postgres
processes (from /proc, so other load on the machine shows there), the floor measured
beside it (orjson parse + sha256 per record + COPY of the rows into unindexed temporary
tables), and the size of the record tables and their indexes. The database is dropped.
"""

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

CLOCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK


def postgres_cpu():
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    total += proc_cpu(entry.name)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--links", type=int, default=60_000)
    parser.add_argument("--results", type=int, default=40_000)
    parser.add_argument("--explain", action="store_true", help="print the plan of the identity lookup after the post")
    parser.add_argument("--profile", action="store_true", help="print where the post's Python time went")
    args = parser.parse_args()

    import psycopg

    name = f"cw_pg_bench_{os.getpid()}"
    with psycopg.connect(f"{args.server}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    root = Path(args.root).resolve()
    sys.path.insert(0, str(root))
    os.chdir(root)
    os.environ["DATABASE_URL"] = f"{args.server}/{name}"
    os.environ.setdefault("CACHEWEB_SECRET_KEY", "bench")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cacheweb.settings")
    if "CACHEWEB_DATA_DIR" not in os.environ:
        import tempfile

        os.environ["CACHEWEB_DATA_DIR"] = tempfile.mkdtemp(prefix="cw-schema-bench-")
    import django
    import orjson

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from accounts.models import EngineToken, Organization
    from bench.graph_bench import make_graph
    from records import services

    try:
        call_command("migrate", verbosity=0)
        org = Organization.ensure("bench")
        token_row, _ = EngineToken.issue(org, label="bench")
        body = orjson.dumps(make_graph(args.keys, args.links, args.results))
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
            cursor.execute("CHECKPOINT")

        cpu0, back0, pg0, wall0 = time.process_time(), proc_cpu(backend), postgres_cpu(), time.monotonic()
        if args.profile:
            import cProfile

            profile = cProfile.Profile()
            profile.enable()
        export, graph, _ = services.update_records(org, token_row, orjson.loads(body))
        wall = time.monotonic() - wall0
        if args.profile:
            import pstats

            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        cpu, back, pg = time.process_time() - cpu0, proc_cpu(backend) - back0, postgres_cpu() - pg0

        # The floor: what any implementation has to do with this body.
        rows = [(r, n, d) for n, (r, (d, _)) in enumerate(graph.records.items())]
        inputs = [(n, n, "", n) for n in range(graph.link_count)]
        f_cpu0, f_back0, f_wall0 = time.process_time(), proc_cpu(backend), time.monotonic()
        parsed = orjson.loads(body)
        for row in parsed["CacheKeys"]:
            hashlib.sha256(row["ID"].encode()).digest()
        with connection.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("CREATE TEMPORARY TABLE floor_r (i bytea, n bigint, d text) ON COMMIT DROP")
            cursor.execute("CREATE TEMPORARY TABLE floor_i (r bigint, i int, s text, f bigint) ON COMMIT DROP")
            with cursor.cursor.copy("COPY floor_r FROM STDIN") as copy:
                for identity, n, digest in rows:
                    copy.write_row((bytes.fromhex(identity[7:]), n, digest))
            with cursor.cursor.copy("COPY floor_i FROM STDIN") as copy:
                for row in inputs:
                    copy.write_row(row)
            cursor.execute("COMMIT")
        f_wall = time.monotonic() - f_wall0
        f_cpu, f_back = time.process_time() - f_cpu0, proc_cpu(backend) - f_back0

        if args.explain:
            from django.test.utils import CaptureQueriesContext

            from records import bulk

            with CaptureQueriesContext(connection) as queries:
                bulk.records_by_identity(org.pk, list(graph.records)[:20_000])
            some = ",".join(str(n) for n in range(1, 2000, 7))
            # The lookup of /records, then what the import, eviction and organization
            # deletion ask of the tables that lost an index.
            plans = [
                queries.captured_queries[-1]["sql"],
                f"SELECT id, digest, input_count FROM records_record WHERE organization_id = {org.pk}",
                f'SELECT record_id, "index", selector, source_id FROM records_recordinput WHERE organization_id = {org.pk}',
                f"SELECT id FROM records_recordinput WHERE record_id IN ({some})",
                f"SELECT id FROM records_recordinput WHERE source_id IN ({some})",
                f"SELECT id FROM records_result WHERE record_id IN ({some})",
                f"SELECT id FROM records_resultlayer WHERE result_id IN ({some})",
            ]
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
                for sql in plans:
                    cursor.execute("EXPLAIN " + sql)
                    print(sql[:100] + "\n   " + "\n   ".join(row[0] for row in cursor.fetchall()))
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT c, pg_total_relation_size(c), pg_indexes_size(c) FROM unnest(%s::regclass[]) c",
                [["records_record", "records_recordinput"]],
            )
            sizes = cursor.fetchall()
        print(f"code: {root}  database: {name}  graph: {graph.key_count} keys, {graph.link_count} links, "
              f"{len(graph.records)} records, ExportRecords {len(export)}")
        print(f"first post: wall {wall:.2f} s, web CPU {cpu:.2f} s, PostgreSQL backend CPU {back:.2f} s "
              f"(all postgres processes {pg:.2f} s)")
        print(f"floor:      wall {f_wall:.2f} s, CPU {f_cpu:.2f} s + backend {f_back:.2f} s; "
              f"ratio wall {wall / f_wall:.1f}x, CPU (web+backend) {(cpu + back) / (f_cpu + f_back):.1f}x")
        for table, total, indexes in sizes:
            print(f"{table}: {total / 2**20:.1f} MiB total, {indexes / 2**20:.1f} MiB indexes")
    finally:
        connection.close()
        with psycopg.connect(f"{args.server}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name}")


if __name__ == "__main__":
    main()
