"""Load run: 16 simulated engines at once, several export/import rounds, against the service
as `bin/run` starts it (gunicorn + a Celery worker) on whatever DATABASE_URL and
CELERY_BROKER_URL say, or against a loopback URL you pass.

    python bench/load_bench.py                        # starts web + worker itself
    python bench/load_bench.py --url http://127.0.0.1:8080/magicache --token TOKEN

Reports p50/p99 per endpoint, errors, wrong hits and the service's peak memory (sum of the
resident sizes of its processes, sampled). Exits 1 on any error or wrong hit. Bounded: at
most 64 engines, 20 rounds, --max-requests requests and --time-limit seconds (rounds
not started past it), loopback addresses only.
"""

import argparse
import json
import os
import sys
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="engine URL of a running service on this machine")
    parser.add_argument("--token", help="read-write engine token for --url")
    parser.add_argument("--engines", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--scale", type=int, default=32 * 1024, help="bytes in a typical layer")
    parser.add_argument("--download-limit", type=int, default=12, help="layers downloaded per engine per import")
    parser.add_argument("--history", type=int, default=20,
                        help="old builds (about 14 keys each) in every engine's store, posted every round")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000,
                        help="sources differ per seed, so each run exports fresh work")
    parser.add_argument("--web-workers", type=int, default=None, help="gunicorn workers when starting the service")
    parser.add_argument("--time-limit", type=float, default=900)
    parser.add_argument("--max-requests", type=int, default=50000, help="stop (and fail) past this many requests")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not (1 <= args.engines <= 64 and 1 <= args.rounds <= 20):
        parser.error("--engines must be 1..64 and --rounds 1..20")
    if bool(args.url) != bool(args.token):
        parser.error("give --url and --token together")
    if args.url and urllib.parse.urlsplit(args.url).hostname not in LOOPBACK:
        parser.error("the load run only targets loopback addresses")

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cacheweb.settings")
    if args.web_workers:
        os.environ["CACHEWEB_WEB_WORKERS"] = str(args.web_workers)
    import django

    django.setup()
    from enginesim.scenarios import RunOptions, run

    service = None
    url, token = args.url, args.token
    if not url:
        from django.core.management import call_command

        from accounts.models import EngineToken, Organization
        from enginesim.localservice import LocalService

        call_command("migrate", interactive=False, verbosity=0)
        row, token = EngineToken.issue(Organization.ensure("bench"), label="load_bench (revoked when done)")
        service = LocalService()
        url = service.url + "/magicache"
    sampler = MemorySampler(service) if service else None
    try:
        report = run(RunOptions(
            url=url, token=token, scenario="fleet", engines=args.engines, rounds=args.rounds,
            seed=args.seed, scale=args.scale, download_limit=args.download_limit, time_limit=args.time_limit,
            history=args.history, max_requests=args.max_requests,
        ))
    finally:
        if sampler:
            sampler.stop()
        if service:
            service.stop()
            row.revoke()
    from django.db import connection

    result = report.as_dict()
    result["database"] = connection.vendor
    result["broker"] = _broker()
    if sampler:
        result["service_peak_rss_mib"] = round(sampler.peak_total_kib / 1024, 1)
        result["service_peak_rss_by_role_mib"] = {k: round(v / 1024, 1) for k, v in sampler.peak_by_role.items()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"database {result['database']}, broker {result['broker']}, seed {args.seed}")
        print("\n".join(report.lines()))
        if sampler:
            roles = ", ".join(f"{k} {v} MiB" for k, v in result["service_peak_rss_by_role_mib"].items())
            print(f"service peak memory: {result['service_peak_rss_mib']} MiB in total ({roles})")
    failed = not report.ok or report.failed_requests
    return 1 if failed else 0


def _broker():
    from django.conf import settings

    broker = getattr(settings, "CELERY_BROKER_URL", "") or ""
    return broker.split("://")[0] or "default"


class MemorySampler:
    """Total resident memory of the service's processes, sampled every 100 ms: VmHWM per
    process misses that gunicorn and Celery fork and reap children."""

    def __init__(self, service, interval=0.1):
        from enginesim.localservice import _descendants

        self._descendants = _descendants
        self.service = service
        self.interval = interval
        self.peak_total_kib = 0
        self.peak_by_role = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        roles = ("web", "worker")
        while not self._stop.is_set():
            total = 0
            for role, child in zip(roles, self.service.children):
                rss = sum(_rss_kib(pid) for pid in [child.pid, *self._descendants(child.pid)])
                self.peak_by_role[role] = max(self.peak_by_role.get(role, 0), rss)
                total += rss
            self.peak_total_kib = max(self.peak_total_kib, total)
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join()


def _rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
