from django.core.management.base import BaseCommand, CommandError

from blobs.identity import IDENTITY_FILE, WrongBlobDirectory, check_store
from blobs.models import StoreIdentity
from blobs.storage import get_store


class Command(BaseCommand):
    help = (
        "Show whether this process's blob directory is the built-in store this database's blobs were "
        "written to (web processes refuse to start on another). With --adopt, make it the store: for a "
        "disk replaced on purpose; the blobs it lacks are then marked lost as engines ask for them, and "
        "uploaded again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--adopt", action="store_true", help="record this blob directory as the store")

    def handle(self, *args, adopt=False, **options):
        store = get_store()
        if store.kind != "filesystem":
            self.stdout.write("S3 storage: every process shares the bucket; nothing to check.")
            return
        try:
            store_id = check_store(adopt=adopt)
        except WrongBlobDirectory as exc:
            raise CommandError(str(exc)) from None
        row = StoreIdentity.objects.get(pk=1)
        self.stdout.write(
            f"{store.root} is this database's blob store {store_id} ({IDENTITY_FILE}; recorded from "
            f"{row.location} at {row.recorded_at:%Y-%m-%d %H:%M} UTC)."
        )
