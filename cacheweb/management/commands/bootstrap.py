import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from accounts.models import EngineToken, Organization
from cacheweb.serving import bind_address

DEFAULT_ORG = "default"


def service_base_url():
    if settings.PUBLIC_URL:
        return settings.PUBLIC_URL.rstrip("/")
    host, port = bind_address()
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"



class Command(BaseCommand):
    help = (
        "Prepare a deployment: migrate, collect static files, create a first admin if there "
        "is none and the `default` organization if it is missing. An engine token for "
        "`default` is printed when that organization is created (the first start) or when "
        "--new-token is given, never otherwise."
    )

    def add_arguments(self, parser):
        tokens = parser.add_mutually_exclusive_group()
        tokens.add_argument("--new-token", action="store_true", help="print a new engine token for `default`")
        tokens.add_argument("--no-token", action="store_true", help="issue no engine token, even on the first start")

    def handle(self, new_token, no_token, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        base = service_base_url()
        self._ensure_admin(base)
        org, created = Organization.objects.get_or_create(slug=DEFAULT_ORG, defaults={"name": DEFAULT_ORG})
        if no_token:
            return
        if new_token or created:
            _, value = EngineToken.issue(org, label="issued by bootstrap")
            self.stdout.write("")
            self.stdout.write(f"Engine token for organization '{org.slug}' (shown once; store it). Give an engine:")
            self.stdout.write(f"  _EXPERIMENTAL_DAGGER_CACHESERVICE_URL={base}/magicache")
            self.stdout.write(f"  _EXPERIMENTAL_DAGGER_CACHESERVICE_TOKEN={value}")
            self.stdout.write("")
            return
        active = EngineToken.objects.filter(organization=org).active().count()
        self.stdout.write(
            f"Engines: _EXPERIMENTAL_DAGGER_CACHESERVICE_URL={base}/magicache; "
            f"{active} active token(s) for '{org.slug}' (manage.py listtokens). "
            "A new one: bin/run --new-token."
        )

    def _ensure_admin(self, base):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write(f"Dashboard: {base}/ (log in as an existing superuser; Django admin at {base}/admin/).")
            return
        username = os.environ.get("CACHEWEB_ADMIN_USER", "admin")
        password = os.environ.get("CACHEWEB_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        if not username:
            raise CommandError("CACHEWEB_ADMIN_USER is empty")
        User.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(f"Created the first admin. Log in to the dashboard at {base}/ (Django admin: {base}/admin/) with")
        self.stdout.write(f"  user: {username}")
        self.stdout.write(f"  password: {password}")
        self.stdout.write("and change the password in Django admin.")
