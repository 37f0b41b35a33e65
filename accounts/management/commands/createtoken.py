from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import EngineToken, Organization, slug_validator
from audit import services as audit


class Command(BaseCommand):
    help = (
        "Create an engine token for the organization ORG, which must exist (or give "
        "--create-org). The token is the last line of the output."
    )

    def add_arguments(self, parser):
        parser.add_argument("org", help="organization slug")
        parser.add_argument("--read-only", action="store_true", help="import and download only")
        parser.add_argument("--label", default="", help="what the token is for")
        parser.add_argument("--create-org", action="store_true", help="create the organization if it does not exist")

    def handle(self, org, read_only, label, create_org, **options):
        try:
            slug_validator(org)
        except ValidationError:
            raise CommandError(f"invalid organization slug {org!r}: use lower-case letters, digits, dashes")
        organization = Organization.objects.filter(slug=org).first()
        if organization is None:
            if not create_org:
                raise CommandError(
                    f"no organization {org!r}; check the spelling, or give --create-org to create it"
                )
            organization = Organization.ensure(org)
            self.stdout.write(f"Created organization {organization.slug}.")
        row, value = EngineToken.issue(organization, read_only=read_only, label=label, actor=audit.command("createtoken"))
        kind = "read-only" if read_only else "read-write"
        self.stdout.write(f"Created {kind} token {row.prefix}… for organization {organization.slug}.")
        self.stdout.write("It is shown only now; store it as a secret.")
        self.stdout.write(value)
