"""Building /records and /layers payloads the way an engine writes them, for the graph tests."""

import gzip
import hashlib
import json
import secrets
import string

from blobs.models import Blob
from tests.support import engine_request

MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+zstd"
ZERO = "0001-01-01T00:00:00Z"


def sha(text):
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def root_key(digest, output=0):
    """buildkit's rootKey: the ID of an input-less cache key."""
    if digest.startswith("random:"):
        return "random:" + hashlib.sha256(f"{digest}@{output}".encode()).hexdigest()
    return sha(f"{digest}@{output}")


def output_key(digest, output=0):
    """buildkit's outputKey: a link's digest with the output index folded in."""
    return sha(f"{digest}@{output}")


def random_key_id(rng=None):
    alphabet = string.digits + string.ascii_lowercase
    if rng is None:
        return "".join(secrets.choice(alphabet) for _ in range(25))
    return "".join(rng.choice(alphabet) for _ in range(25))


def key(key_id, *results):
    return {"ID": key_id, "Results": [dict(r) for r in results] or None}


def result(ref_id, created_at="2026-11-27T10:00:00.123456789Z", description="exec make"):
    return {"ID": ref_id, "CreatedAt": created_at, "Description": description}


def link(key_id, linked_id, input_index, digest, selector=""):
    return {"ID": key_id, "LinkedID": linked_id, "Input": input_index, "Digest": digest, "Selector": selector}


def descriptor(blob_digest, size, diff_id=None, media_type=MEDIA_TYPE, created_at=None):
    annotations = {"containerd.io/uncompressed": diff_id or sha("diff " + blob_digest)}
    if created_at:
        annotations["buildkit/createdat"] = created_at
    return {"mediaType": media_type, "digest": blob_digest, "size": size, "annotations": annotations}


def store_blob(org, digest, size, state="verified"):
    Blob.objects.get_or_create(organization=org, digest=digest, defaults={"size": size, "state": state})


def post_records(client, token, keys, links, **extra):
    return engine_request(client, "POST", "/magicache/records", token, {"CacheKeys": keys, "Links": links}, **extra)


def post_layers(client, token, updated, **extra):
    return engine_request(client, "POST", "/magicache/layers", token, {"UpdatedRecords": updated}, **extra)


def get_import(client, token):
    response = engine_request(client, "GET", "/magicache/import", token, HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200, response.content
    body = response.content
    if response.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return json.loads(body)
