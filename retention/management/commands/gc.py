from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat

from accounts.models import Organization
from audit import services as audit
from retention.services import (
    BLOB_KINDS,
    FAILED_SNAPSHOTS,
    KINDS,
    PENDING_EXPORTS,
    RELEASED_SNAPSHOTS,
    collect_garbage,
    eviction_policy,
)


def _size(size):
    text = f"{size} bytes"
    if size >= 1024:
        text += f" ({filesizeformat(size).replace(chr(0xA0), ' ')})"
    return text


def _item_line(kind, item):
    if kind in BLOB_KINDS:
        return f"{item.digest}  {_size(item.size or 0)}"
    if kind in (RELEASED_SNAPSHOTS, FAILED_SNAPSHOTS):
        return f"snapshot {item.pk} of mount {item.mount.name!r}: {item.digest}  {_size(item.size or 0)}"
    if kind == PENDING_EXPORTS:
        return f"export of record {item.record.identity} (ref {item.cache_ref_id}), asked {item.asked_at:%Y-%m-%d %H:%M}"
    raise ValueError(kind)


class Command(BaseCommand):
    help = (
        "Run the storage lifecycle pass now (the scheduler runs it every CACHEWEB_GC_INTERVAL "
        "seconds): delete released and failed mount snapshots, stale pending exports and "
        "blobs nothing references, older than the grace; then evict blobs as "
        "CACHEWEB_EVICT_UNUSED_AFTER and CACHEWEB_ORG_STORAGE_LIMIT (or the organization's own storage policy) say. Prints, per "
        "organization, what was deleted (with --dry-run: what would be), each item listed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", help="only this organization (slug)")
        parser.add_argument("--dry-run", action="store_true", help="delete nothing; list what would be deleted")
        parser.add_argument(
            "--limit", type=int, default=50, metavar="N", help="list at most N items of each kind (default 50)"
        )

    def handle(self, org, dry_run, limit, **options):
        if limit < 0:
            raise CommandError("--limit must be 0 or more")
        organization = None
        if org:
            organization = Organization.objects.filter(slug=org).first()
            if organization is None:
                raise CommandError(f"no organization {org!r}")
        self.stdout.write(eviction_policy().describe())
        reports = collect_garbage(
            organization, dry_run=dry_run, item_limit=limit, log_summary=False, actor=audit.command("gc")
        )
        if not reports:
            self.stdout.write("no organizations yet: nothing to collect")
        width = max(len(label) for label in KINDS.values())
        verb = "would delete" if dry_run else "deleted"
        for report in reports:
            if report.error:
                self.stderr.write(f"{report.organization}: failed: {report.error}")
                continue
            self.stdout.write(f"{report.organization}: {verb} (grace {report.grace}; {report.policy.describe()})")
            for kind, label in KINDS.items():
                line = f"  {label:<{width}}  {report.counts[kind]:>8}"
                if kind in BLOB_KINDS:
                    line += f"  {_size(report.bytes[kind])}"
                self.stdout.write(line)
                for item in report.items[kind]:
                    self.stdout.write(f"      {_item_line(kind, item)}")
                if report.items[kind] and report.unlisted(kind):
                    self.stdout.write(f"      ... and {report.unlisted(kind)} more")
            if report.kept:
                self.stdout.write(f"  {report.kept} blob(s) kept: the store could not delete them; next pass retries")
        failed = [report.organization for report in reports if report.error]
        if failed:
            raise CommandError(f"the pass failed for {', '.join(failed)} (see the log)")
