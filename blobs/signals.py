"""Signals other apps listen to.

blob_verified(sender=Blob, blob=<Blob>): a blob of one organization has just become
verified (a built-in PUT whose bytes matched the digest, or an S3 object confirmed by
HEAD). Sent after the transaction that marked it commits, so receivers see the row.

blob_lost(sender=Blob, organization=<Organization>, digests=[str]): blobs that were
verified turned out to be gone from storage (their rows are pending again).

blobs_used(sender=Blob, uses=[(organization id, digest, last use)]): download URLs were
issued for these blobs; sent when their buffered use counts are written (at most once per
BLOB_USE_WRITE_INTERVAL per blob, the first use at once).
"""

from django.dispatch import Signal

blob_verified = Signal()
blob_lost = Signal()
blobs_used = Signal()
