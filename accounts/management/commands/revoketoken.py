from django.core.management.base import BaseCommand, CommandError

from accounts.models import LOOKUP_LENGTH, TOKEN_PREFIX, EngineToken, hash_token
from audit import services as audit


def matching_tokens(text):
    """The tokens `text` names: the one whose value it is, or, for a prefix of at most
    the prefix `listtokens` shows (cwt_ and 8 characters), every token that starts so.
    Only the lookup part of a token is stored in clear, so a longer text must be the
    whole token."""
    rest = text[len(TOKEN_PREFIX) :]
    exact = list(EngineToken.objects.select_related("organization").filter(token_hash=hash_token(text)))
    if exact or len(rest) > LOOKUP_LENGTH:
        return exact
    # The database may compare case-insensitively (SQLite's LIKE); tokens are not.
    candidates = EngineToken.objects.select_related("organization").filter(lookup__startswith=rest)
    return sorted((row for row in candidates if row.lookup.startswith(rest)), key=lambda row: row.lookup)


class Command(BaseCommand):
    help = (
        "Revoke an engine token, given its full value or any prefix that names only one "
        "token (e.g. cwt_AbCd, or the prefix listtokens shows)."
    )

    def add_arguments(self, parser):
        parser.add_argument("token", help="full token or a prefix of it, e.g. cwt_AbCd")

    def handle(self, token, **options):
        if not token.startswith(TOKEN_PREFIX) or token == TOKEN_PREFIX:
            raise CommandError(f"give a token or a prefix of one: {TOKEN_PREFIX} and at least one more character")
        matches = matching_tokens(token)
        if len(matches) > 1:
            # A revoked token sharing the prefix does not make an active one ambiguous.
            active = [row for row in matches if not row.revoked]
            matches = active or matches
        if not matches:
            raise CommandError(f"no token starts with {token!r} (see listtokens --all)")
        if len(matches) > 1:
            names = ", ".join(f"{row.prefix} ({row.organization.slug})" for row in matches)
            raise CommandError(f"{token!r} matches {len(matches)} tokens: {names}; give a longer prefix")
        row = matches[0]
        if row.revoked:
            self.stdout.write(f"{row.prefix} was already revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S}.")
            return
        row.revoke(actor=audit.command("revoketoken"))
        self.stdout.write(f"Revoked {row.prefix} ({row.organization.slug}).")
