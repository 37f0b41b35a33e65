import base64
import json
import urllib.error
import urllib.request

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from cacheweb.serving import bind_address
from enginesim.scenarios import RunOptions, run

DEMO_SEED = 2024
PROBE_TIMEOUT = 3


def bound_url():
    """The base URL of the service this environment's CACHEWEB_BIND would run."""
    host, port = bind_address()
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def answers_as_cacheweb(base):
    """True when a cacheweb service answers /healthz at `base` (healthy or not)."""
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=PROBE_TIMEOUT) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:  # 503: running, with a part failing
        body = exc.read()
    except (OSError, ValueError):
        return False
    try:
        health = json.loads(body)
    except ValueError:
        return False
    return isinstance(health, dict) and "status" in health and "database" in health


def token_works(base, token):
    credentials = base64.b64encode(f"{token}:".encode()).decode()
    request = urllib.request.Request(base + "/magicache/config", headers={"Authorization": f"Basic {credentials}"})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT) as response:
            return response.status == 200
    except OSError:
        return False


class Command(BaseCommand):
    help = (
        "Fill an instance with demo cache through the real engine protocol: a few simulated "
        "engines export, import (with hits), download layers and sync cache mounts. Without "
        "--url it seeds the existing organization --org with a temporary token (revoked when "
        "done), through the service running on CACHEWEB_BIND if one answers there, else "
        "through a web server and worker it starts on a free loopback port and stops after."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", help="engine URL of a running service, e.g. http://host:8080/magicache")
        parser.add_argument("--token", help="a read-write engine token (with --url)")
        parser.add_argument("--org", default="default", help="organization to seed (without --url); must exist")
        parser.add_argument("--engines", type=int, default=3)
        parser.add_argument("--scale", type=int, default=64 * 1024, help="bytes in a typical layer")

    def handle(self, url, token, org, engines, scale, **options):
        if bool(url) != bool(token):
            raise CommandError("give --url and --token together, or neither to seed this instance")
        if url:
            self._seed(url, token, engines, scale)
            self.stdout.write(self.style.SUCCESS(f"Seeded the token's organization at {url}."))
            return
        from accounts.models import EngineToken, Organization

        call_command("migrate", interactive=False, verbosity=0)
        organization = Organization.objects.filter(slug=org).first()
        if organization is None:
            raise CommandError(
                f"no organization {org!r} (bin/run creates 'default'; "
                f"`manage.py createtoken {org} --create-org` creates others)"
            )
        base = bound_url()
        running = answers_as_cacheweb(base)
        row, value = EngineToken.issue(organization, label="seed_demo (revoked when done)")
        try:
            if running:
                if not token_works(base, value):
                    raise CommandError(
                        f"a cacheweb service answers at {base} (CACHEWEB_BIND) but refuses the token "
                        "this command just issued: it runs on another database. Run seed_demo with "
                        "the same environment as that service, or give --url and --token."
                    )
                self.stdout.write(f"Seeding organization '{org}' through the running service at {base}.")
                self._seed(base + "/magicache", value, engines, scale)
                where = f"through the running service at {base}"
            else:
                from enginesim.localservice import LocalService

                self.stdout.write(
                    f"Nothing answers at {base} (CACHEWEB_BIND): starting a web server and worker on "
                    f"a free loopback port to seed organization '{org}'."
                )
                with LocalService() as service:
                    self._seed(service.url + "/magicache", value, engines, scale)
                    where = f"through a temporary service at {service.url} (now stopped)"
        finally:
            row.revoke()
        self.stdout.write(
            self.style.SUCCESS(
                f"Seeded organization '{org}' {where}: {2 * engines} simulated engines' cache, "
                f"in this instance's database and blob store."
            )
        )

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
