import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from accounts.models import EngineToken, Organization
from cacheweb.serving import bind_address

DEFAULT_ORG = "default"


def engine_base_url():
    if settings.PUBLIC_URL:
        return settings.PUBLIC_URL
    host, port = bind_address()
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


class Command(BaseCommand):
    help = (
        "Prepare a deployment: migrate, collect static files, create a first admin if there "
        "is none, ensure the `default` organization and print a fresh engine token."
    )

    def add_arguments(self, parser):
        parser.add_argument("--no-token", action="store_true", help="do not issue an engine token")

    def handle(self, no_token, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        self._ensure_admin()
        org = Organization.ensure(DEFAULT_ORG)
        if no_token:
            return
        _, value = EngineToken.issue(org, label="issued at start")
        base = engine_base_url()
        self.stdout.write("")
        self.stdout.write(f"Engine token for organization '{org.slug}' (shown once). Give an engine:")
        self.stdout.write(f"  _EXPERIMENTAL_DAGGER_CACHESERVICE_URL={base}/magicache")
        self.stdout.write(f"  _EXPERIMENTAL_DAGGER_CACHESERVICE_TOKEN={value}")
        self.stdout.write("")

    def _ensure_admin(self):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("Admin: log in at /admin/ with your existing superuser.")
            return
        username = os.environ.get("CACHEWEB_ADMIN_USER", "admin")
        password = os.environ.get("CACHEWEB_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write("Created the first admin. Log in at /admin/ with")
        self.stdout.write(f"  user: {username}")
        self.stdout.write(f"  password: {password}")
        self.stdout.write("and change the password there.")
