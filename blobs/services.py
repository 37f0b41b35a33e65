"""Blob bookkeeping that other apps rely on."""

from blobs.models import Blob, BlobState

QUERY_BATCH = 5000


def verified_blob_sizes(organization, digests):
    """{digest: size} for those of `digests` that this organization holds, verified."""
    digests = list(set(digests))
    found = {}
    for start in range(0, len(digests), QUERY_BATCH):
        rows = Blob.objects.filter(
            organization=organization,
            state=BlobState.VERIFIED,
            digest__in=digests[start : start + QUERY_BATCH],
        ).values_list("digest", "size")
        found.update(rows)
    return found
