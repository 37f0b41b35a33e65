from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from api.forms import MAX_EXPIRES_DAYS
from api.models import ApiToken
from audit import services as audit


class Command(BaseCommand):
    help = "Create a personal API token for the operator USER. The token is the last line of the output."

    def add_arguments(self, parser):
        parser.add_argument("user", help="user name")
        parser.add_argument("--read-only", action="store_true", help="may read, never change anything")
        parser.add_argument("--label", default="", help="what the token is for")
        parser.add_argument("--expires-days", type=int, default=None, help="expire after N days (default: never)")

    def handle(self, user, read_only, label, expires_days, **options):
        User = get_user_model()
        found = User.objects.filter(**{User.USERNAME_FIELD: user}).first()
        if found is None:
            raise CommandError(f"no user {user!r}")
        if not found.is_active:
            raise CommandError(f"user {user!r} is inactive")
        if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRES_DAYS:
            raise CommandError(f"--expires-days must be from 1 to {MAX_EXPIRES_DAYS}")
        if len(label) > 200:
            raise CommandError("--label: at most 200 characters")
        row, value = ApiToken.issue(
            found, read_only=read_only, label=label, expires_days=expires_days, actor=audit.command("createapitoken")
        )
        kind = "read-only" if read_only else "read-write"
        expiry = f", expires {row.expires_at:%Y-%m-%d %H:%M} UTC" if row.expires_at else ""
        self.stdout.write(f"Created {kind} API token {row.prefix}… for {found.get_username()}{expiry}.")
        self.stdout.write("It is shown only now; store it as a secret.")
        self.stdout.write(value)
