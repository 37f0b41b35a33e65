from django.core.management.base import BaseCommand, CommandError

from accounts.models import EngineToken, Organization


def _when(value):
    return value.strftime("%Y-%m-%d %H:%M") if value else "never"


class Command(BaseCommand):
    help = "List engine tokens (prefix, organization, rights, last use, state)."

    def add_arguments(self, parser):
        parser.add_argument("--org", help="only this organization")
        parser.add_argument("--all", action="store_true", help="include revoked tokens")

    def handle(self, org, all, **options):
        tokens = EngineToken.objects.select_related("organization").order_by("organization__slug", "created_at")
        if org:
            if not Organization.objects.filter(slug=org).exists():
                raise CommandError(f"no organization {org!r}")
            tokens = tokens.filter(organization__slug=org)
        if not all:
            tokens = tokens.active()
        self.stdout.write(f"{'PREFIX':<14} {'ORG':<20} {'ACCESS':<10} {'LAST USED':<17} {'STATE':<8} LABEL")
        for t in tokens:
            access = "read-only" if t.read_only else "read-write"
            state = "revoked" if t.revoked else "active"
            self.stdout.write(
                f"{t.prefix:<14} {t.organization.slug:<20} {access:<10} {_when(t.last_used_at):<17} {state:<8} {t.label}"
            )
