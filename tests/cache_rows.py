"""Cache rows made straight in the database, as the engine endpoints would leave them: blobs
(with their bytes on the built-in storage), layers used by results, and mount snapshots."""

from datetime import timedelta

from django.utils import timezone

from blobs.models import Blob
from mounts.models import MountSnapshot
from records.models import Layer, Record, Result, ResultLayer
from tests.buildkit_oracle import MEDIA_TYPE, sha, store_blob

NOW = timezone.now()


def a_blob(org, name, size, uses=0, last_used=None, verified_days_ago=1, state="verified"):
    digest = sha(name)
    store_blob(org, digest, size, state=state)
    Blob.objects.filter(organization=org, digest=digest).update(
        use_count=uses,
        last_used_at=last_used,
        verified_at=NOW - timedelta(days=verified_days_ago) if state == "verified" else None,
    )
    return digest


def a_layer(org, digest, size, results=1, engine=None):
    """A layer of the graph and `results` results whose one-layer chain is it."""
    layer = Layer.objects.create(organization=org, digest=digest, media_type=MEDIA_TYPE, size=size, diff_id=sha("d" + digest))
    for i in range(results):
        record = Record.objects.create(
            organization=org, identity=sha(f"identity {digest} {i}"), digest=sha(f"record {digest} {i}"), has_result=True
        )
        chain = Result.objects.create(
            record=record, chain=sha(f"chain {digest}"), created_at=NOW, engine=engine,
            size=size, chain_size=size, layer_count=1, top_digest=digest,
        )
        ResultLayer.objects.create(result=chain, position=0, layer=layer)
    return layer


def a_snapshot(mount, digest, size, released=False, minutes_ago=0, **fields):
    verified_at = NOW - timedelta(minutes=minutes_ago)
    return MountSnapshot.objects.create(
        mount=mount, digest=digest, size=size, state="verified", verified_at=verified_at, created_at=verified_at,
        released_at=NOW if released else None, **fields,
    )
