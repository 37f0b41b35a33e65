import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.models import Organization
from blobs.services import rehash_blobs
from blobs.storage import StoreUnavailable

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text):
    match = re.fullmatch(r"([0-9]{1,9})([smhd])", text or "")
    if not match:
        raise CommandError(f"--since takes a number and a unit (s, m, h or d), e.g. 2h; not {text!r}")
    return timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])


class Command(BaseCommand):
    help = (
        "Read back verified blobs and check their bytes against their digests; delete the "
        "bad ones and mark them lost so that engines upload them again. Run it after a "
        "machine running with CACHEWEB_BLOB_FSYNC off crashed (with --since covering the "
        "minutes before the crash), or when a disk is suspect."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", help="only this organization (slug)")
        parser.add_argument("--since", help="only blobs verified this recently, e.g. 30m, 2h, 1d")

    def handle(self, org, since, **options):
        verified_since = timezone.now() - _duration(since) if since else None
        organizations = Organization.objects.order_by("slug")
        if org:
            organizations = organizations.filter(slug=org)
            if not organizations.exists():
                raise CommandError(f"no organization {org!r}")
        total_checked = total_lost = 0
        for organization in organizations:
            try:
                checked, lost = rehash_blobs(organization, verified_since)
            except StoreUnavailable as exc:
                raise CommandError(f"cannot read the blob store: {exc}") from None
            total_checked += checked
            total_lost += len(lost)
            for digest in lost:
                self.stdout.write(f"{organization.slug}: {digest} had lost or wrong bytes; deleted, will be uploaded again")
            self.stdout.write(f"{organization.slug}: {checked} blob(s) checked, {len(lost)} bad")
        self.stdout.write(f"{total_checked} blob(s) checked, {total_lost} bad")
