"""Cache-mount-like directories and their tar+zstd, built the way the engine packs a mount
(a tar of the mount's root compressed with zstd), plus the numbers an index must find."""

import hashlib
import io
import os
import tarfile
from pathlib import Path

import zstandard

MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+zstd"


def make_tree(root: Path, seed: bytes = b"seed"):
    """A small go-module-cache-like tree: nested files, an empty directory, a root file
    and a symlink. `seed` varies the contents (and so the digest)."""
    files = {
        "pkg/mod/cache/download/example.com/lib/@v/v1.2.3.zip": 120_000,
        "pkg/mod/cache/download/example.com/lib/@v/v1.2.3.mod": 300,
        "pkg/mod/example.com/lib@v1.2.3/lib.go": 4_000,
        "pkg/mod/example.com/lib@v1.2.3/internal/deep/x.go": 2_500,
        "go-build/ab/abcdef-d": 64_000,
        "go-build/cd/cdef01-a": 1_000,
        "README.cache": 42,
    }
    for rel, size in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_content(seed + rel.encode(), size))
    (root / "go-build" / "empty").mkdir(parents=True)
    os.symlink("example.com/lib@v1.2.3", root / "pkg" / "mod" / "latest")
    return root


def _content(seed, size):
    out = bytearray()
    block = hashlib.sha256(seed).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def tar_bytes(root: Path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return raw.getvalue()


def tar_zstd(root: Path):
    return zstandard.ZstdCompressor(level=3).compress(tar_bytes(root))


def digest_of(blob: bytes):
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def expected_contents(root: Path):
    """What the index should report, computed from the directory itself."""
    files = directories = total = 0
    top = {}
    root_files = {"files": 0, "bytes": 0}
    sizes = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        head = rel.parts[0]
        if path.is_symlink():
            continue
        if path.is_dir():
            directories += 1
            top.setdefault(head, {"name": head, "files": 0, "bytes": 0})
            continue
        size = path.stat().st_size
        files += 1
        total += size
        sizes.append({"path": str(rel), "size": size})
        bucket = root_files if len(rel.parts) == 1 else top.setdefault(head, {"name": head, "files": 0, "bytes": 0})
        bucket["files"] += 1
        bucket["bytes"] += size
    return {
        "files": files,
        "directories": directories,
        "total_bytes": total,
        "top_level": sorted(top.values(), key=lambda d: (-d["bytes"], d["name"])),
        "root_files": root_files,
        "largest_files": sorted(sizes, key=lambda f: (-f["size"], f["path"])),
    }
