from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat

from accounts.models import Organization
from retention.services import BLOB_KINDS, KINDS, collect_garbage


class Command(BaseCommand):
    help = (
        "Run the storage lifecycle pass now (the scheduler runs it every CACHEWEB_GC_INTERVAL "
        "seconds): delete released and failed mount snapshots, stale pending exports and "
        "blobs nothing references, older than the grace; then evict blobs as "
        "CACHEWEB_EVICT_UNUSED_AFTER and CACHEWEB_ORG_STORAGE_LIMIT say. Prints what was "
        "deleted per organization."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", help="only this organization (slug)")
        parser.add_argument("--dry-run", action="store_true", help="delete nothing; print what would be deleted")

    def handle(self, org, dry_run, **options):
        organization = None
        if org:
            organization = Organization.objects.filter(slug=org).first()
            if organization is None:
                raise CommandError(f"no organization {org!r}")
        reports = collect_garbage(organization, dry_run=dry_run)
        width = max(len(label) for label in KINDS.values())
        verb = "would delete" if dry_run else "deleted"
        for report in reports:
            if report.error:
                self.stderr.write(f"{report.organization}: failed: {report.error}")
                continue
            slug = report.organization
            self.stdout.write(f"{slug}: {verb} (grace {report.grace})")
            for kind, label in KINDS.items():
                line = f"  {label:<{width}}  {report.counts[kind]:>8}"
                if kind in BLOB_KINDS:
                    size = report.bytes[kind]
                    line += f"  {size} bytes"
                    if size >= 1024:
                        line += f" ({filesizeformat(size).replace(chr(0xA0), ' ')})"
                self.stdout.write(line)
            if report.kept:
                self.stdout.write(f"  {report.kept} blob(s) kept: the store could not delete them; next pass retries")
        failed = [report.organization for report in reports if report.error]
        if failed:
            raise CommandError(f"the pass failed for {', '.join(failed)} (see the log)")
