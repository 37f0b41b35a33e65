from django.core.management.base import BaseCommand, CommandError

from accounts.models import TOKEN_PREFIX, EngineToken, hash_token


class Command(BaseCommand):
    help = "Revoke an engine token, given its full value or its prefix (as listtokens shows it)."

    def add_arguments(self, parser):
        parser.add_argument("token", help="full token or its prefix, e.g. cwt_AbCd1234")

    def handle(self, token, **options):
        if not token.startswith(TOKEN_PREFIX):
            raise CommandError(f"engine tokens start with {TOKEN_PREFIX}")
        matches = EngineToken.objects.filter(token_hash=hash_token(token))
        if not matches:
            matches = EngineToken.objects.filter(lookup=token[len(TOKEN_PREFIX) :])
        matches = list(matches)
        if not matches:
            raise CommandError("no such token")
        if len(matches) > 1:
            raise CommandError("that prefix matches several tokens; give the full token")
        row = matches[0]
        if row.revoked:
            self.stdout.write(f"{row.prefix} was already revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S}.")
            return
        row.revoke()
        self.stdout.write(f"Revoked {row.prefix} ({row.organization.slug}).")
