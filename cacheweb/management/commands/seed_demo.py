from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from enginesim.scenarios import RunOptions, run

DEMO_SEED = 2024


class Command(BaseCommand):
    help = (
        "Fill an instance with demo cache through the real engine protocol: a few simulated "
        "engines export, import (with hits), download layers and sync cache mounts. Without "
        "--url it starts the web server and a worker on a loopback port itself, seeds the "
        "organization --org with a temporary token, revokes it and stops them."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", help="engine URL of a running service, e.g. http://host:8080/magicache")
        parser.add_argument("--token", help="a read-write engine token (with --url)")
        parser.add_argument("--org", default="default", help="organization to seed when starting the service itself")
        parser.add_argument("--engines", type=int, default=3)
        parser.add_argument("--scale", type=int, default=64 * 1024, help="bytes in a typical layer")

    def handle(self, url, token, org, engines, scale, **options):
        if bool(url) != bool(token):
            raise CommandError("give --url and --token together, or neither to start a local service")
        if url:
            return self._seed(url, token, engines, scale)
        from accounts.models import EngineToken, Organization
        from enginesim.localservice import LocalService

        call_command("migrate", interactive=False, verbosity=0)
        row, value = EngineToken.issue(Organization.ensure(org), label="seed_demo (revoked when done)")
        try:
            self.stdout.write(f"Starting a local web server and worker to seed organization '{org}'...")
            with LocalService() as service:
                self._seed(service.url + "/magicache", value, engines, scale)
        finally:
            row.revoke()

    def _seed(self, url, token, engines, scale):
        # Engines one after another (so later ones hit earlier work and pull cache mounts),
        # then a short round of engines at once.
        for options in (
            RunOptions(url=url, token=token, scenario="pair", engines=engines, seed=DEMO_SEED, scale=scale),
            RunOptions(url=url, token=token, scenario="fleet", engines=engines, rounds=2, seed=DEMO_SEED + 1,
                       scale=scale),
        ):
            report = run(options)
            self.stdout.write("\n".join(report.lines()))
            if not report.ok:
                raise CommandError("seeding found protocol violations or wrong hits (see above)")
        self.stdout.write(self.style.SUCCESS(f"Seeded {url} with {2 * engines} simulated engines' cache."))
