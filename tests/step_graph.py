"""A small build graph exported through the engine endpoints, for the build steps tests.

    golang image (pull) ── copy go.mod ── exec go build ./...   (build A)
           └──────────── copy src ─────── exec go build ./...   (build B, same description)

Every step's chain starts with the image's base layer; each step adds one layer of its own.
"""

import hashlib
import io
import tarfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import zstandard

from accounts.models import Engine, EngineToken
from blobs.storage import get_store
from records.models import Record
from tests.buildkit_oracle import (
    descriptor, key, link, output_key, post_layers, post_records, random_key_id, result, root_key, sha, store_blob,
)

PULL = "pull docker.io/library/golang:1.22"
COPY_MOD = "copy go.mod go.sum /app/"
COPY_SRC = "copy . /src/"
BUILD = "exec go build ./..."

# name: (description, [(input index, input name, selector)], bytes of the file in its layer)
STEPS = {
    "image": (PULL, [], 40_000),
    "mod": (COPY_MOD, [(0, "image", "")], 3_000),
    "src": (COPY_SRC, [(0, "image", sha("sel /src"))], 5_000),
    "build-a": (BUILD, [(0, "mod", "")], 20_000),
    "build-b": (BUILD, [(0, "src", "")], 10_000),
}


@cache
def layer_bytes(name):
    """The step's own layer: a tar+zstd with a directory, its step's file and a README."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        directory = tarfile.TarInfo(f"{name}/bin")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for path, length in ((f"{name}/bin/{name}.out", STEPS[name][2]), (f"{name}/README", 10)):
            info = tarfile.TarInfo(path)
            info.size = length
            data = hashlib.sha256(path.encode()).digest() * (length // 32 + 1)
            tar.addfile(info, io.BytesIO(data[:length]))
    return zstandard.ZstdCompressor().compress(raw.getvalue())


def layer_digest(name):
    return "sha256:" + hashlib.sha256(layer_bytes(name)).hexdigest()


def store_layer(org, name):
    store_blob(org, layer_digest(name), size(name))
    store = get_store()
    if store.kind == "filesystem":
        Path(store.path(org.pk, layer_digest(name))).write_bytes(layer_bytes(name))


def chain(name):
    """The step's layers, base first: its inputs' chain (the first input's), then its own."""
    _, inputs, _ = STEPS[name]
    below = chain(inputs[0][1]) if inputs else []
    return below + [name]


def size(name):
    """Bytes of the step's own layer."""
    return len(layer_bytes(name))


@dataclass
class Graph:
    records: dict  # name -> Record
    engine: Engine


def export_graph(client, org, token, names=None, engine_id="ci-builder-1", created_at="2026-11-27T10:00:00Z"):
    """Post the graph's keys (all of them) and export the results of `names` (default all)."""
    names = list(STEPS) if names is None else names
    row = EngineToken.objects.get(organization=org, label="rw")
    engine, _ = Engine.objects.update_or_create(organization=org, engine_id=engine_id, defaults={"last_token": row})
    ids = {n: (root_key(sha(n)) if not STEPS[n][1] else random_key_id()) for n in STEPS}
    keys = [key(ids[n], result(n, created_at=created_at, description=STEPS[n][0])) for n in STEPS]
    links = [
        link(ids[n], ids[source], index, output_key(sha(n)), selector)
        for n, (_, inputs, _) in STEPS.items()
        for index, source, selector in inputs
    ]
    response = post_records(client, token, keys, links)
    assert response.status_code == 200, response.content
    asked = {entry["CacheRefID"]: entry["Digest"] for entry in response.json()["ExportRecords"]}
    updated = []
    for name in names:
        if name not in asked:
            continue
        for part in chain(name):
            store_layer(org, part)
        updated.append(
            {"RecordDigest": asked[name], "Layers": [descriptor(layer_digest(p), size(p)) for p in chain(name)]}
        )
    if updated:
        answer = post_layers(client, token, updated).json()
        assert answer["Refused"] == [], answer
    records = {}
    for name, (description, inputs, _) in STEPS.items():
        records[name] = Record.objects.get(organization=org, description=description, **(
            {"inputs__source": records[inputs[0][1]]} if inputs else {"input_count": 0}
        ))
    return Graph(records=records, engine=engine)
