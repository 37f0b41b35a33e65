import json
import sys

from django.core.management.base import BaseCommand, CommandError

from enginesim.scenarios import SCENARIOS, RunOptions, run


class Command(BaseCommand):
    help = (
        "Drive a cache service the way Dagger engines do (chunked JSON, Basic auth, real "
        "zstd layers, Range downloads, cache mounts) and check every answer. Prints hits, "
        "bytes and time per call; exits 1 on any protocol violation or wrong hit."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", required=True, help="the engine URL, e.g. http://host:8080/magicache")
        parser.add_argument("--token", required=True, help="a read-write engine token")
        parser.add_argument("--scenario", choices=SCENARIOS, default="pair",
                            help="pair: engines one after another, each checking the earlier ones' work "
                                 "(default); fleet: engines at once, in rounds")
        parser.add_argument("--engines", type=int, default=2)
        parser.add_argument("--rounds", type=int, default=1, help="rounds of import/export (fleet)")
        parser.add_argument("--seed", type=int, default=0,
                            help="runs with different seeds build different sources")
        parser.add_argument("--scale", type=int, default=64 * 1024, help="bytes in a typical layer")
        parser.add_argument("--history", type=int, default=0,
                            help="old builds (about 14 keys each) already in each engine's store (fleet)")
        parser.add_argument("--no-mounts", action="store_true", help="skip cache mount sync")
        parser.add_argument("--download-limit", type=int, default=None,
                            help="download at most this many layers per import")
        parser.add_argument("--settle", type=float, default=15.0,
                            help="seconds a later engine waits for earlier exports to show (pair)")
        parser.add_argument("--expect-hits", action="store_true",
                            help="also fail when an engine misses work an earlier engine exported")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def handle(self, *args, **o):
        if o["engines"] < 1 or o["rounds"] < 1:
            raise CommandError("--engines and --rounds must be at least 1")
        report = run(RunOptions(
            url=o["url"], token=o["token"], scenario=o["scenario"], engines=o["engines"],
            rounds=o["rounds"], seed=o["seed"], scale=o["scale"], mounts=not o["no_mounts"],
            download_limit=o["download_limit"], settle_seconds=o["settle"], history=o["history"],
        ))
        if o["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            self.stdout.write("\n".join(report.lines()))
        if not report.ok or (o["expect_hits"] and report.misses):
            sys.exit(1)
