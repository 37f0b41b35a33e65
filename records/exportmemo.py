"""Each engine's last /records body and what its analysis kept, on local disk, so that
its next post is analysed over only what changed (records.keydiff).

One zstd file per (organization, token, engine) under CACHEWEB_DATA_DIR/export-memo:
a line of JSON with the body's fingerprint and the identities and drop reasons its
analysis gave, then a line with the body's keys and one with its links, as
records.keydiff indexes them. It is a
cache: written without fsync, replaced atomically, trimmed to CACHEWEB_EXPORT_MEMO_MB
(oldest first), and anything missing, unreadable or inconsistent only means the next
post is analysed in full. Every web process on a machine shares it; on another machine
(scaled out on S3 storage) an engine's post is analysed in full until that machine has
seen it once.
"""

import logging
import os
import shutil
import threading
import time

import orjson
import zstandard
from django.conf import settings

from records.keydiff import Previous

log = logging.getLogger("cacheweb.records")

FORMAT = 3
# A trim lists the directory: at most once a minute per process.
TRIM_EVERY = 60.0
_trim_lock = threading.Lock()
_last_trim = [0.0]


def directory():
    return settings.DATA_DIR / "export-memo"


def _path(organization_id, token_id, engine_ref):
    return directory() / f"{organization_id}-{token_id}-{engine_ref or 0}.zst"


def enabled():
    return settings.EXPORT_MEMO_MB > 0


def load(organization_id, token_id, engine_ref):
    """The engine's records.keydiff.Previous, or None."""
    if not enabled() or token_id is None:
        return None
    path = _path(organization_id, token_id, engine_ref)
    try:
        data = zstandard.ZstdDecompressor().decompress(path.read_bytes())
        header, _, rest = data.partition(b"\n")
        state = orjson.loads(header)
        if state.get("format") != FORMAT:
            return None
        entries, _, groups = rest.partition(b"\n")
        return Previous(
            state["digest"],
            state["identities"],
            state["reasons"],
            lambda: _decoded(entries, path),
            lambda: _decoded(groups, path),
        )
    except FileNotFoundError:
        return None
    except (OSError, zstandard.ZstdError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        log.warning("export memo %s unreadable, analysing in full: %s", path.name, exc)
        return None


def _decoded(part, path):
    try:
        value = orjson.loads(part)
    except orjson.JSONDecodeError as exc:
        value = exc
    if isinstance(value, dict):
        return value
    log.warning("export memo %s unreadable, analysing in full: %s", path.name, value)
    return None


def encode(index):
    """The part of the memo a records.keydiff.Index becomes (to save with its graph):
    its two halves on a line each (JSON holds no raw newline)."""
    return orjson.dumps(index.entries) + b"\n" + orjson.dumps(index.groups)


def save(organization_id, token_id, engine_ref, digest, encoded_index, graph):
    """Keep the post with body fingerprint `digest`, `encoded_index` (encode) and the
    Graph its analysis gave, for the engine's next post."""
    if not enabled() or token_id is None:
        return
    header = orjson.dumps(
        {"format": FORMAT, "digest": digest, "identities": graph.identities, "reasons": graph.reasons}
    )
    data = zstandard.ZstdCompressor(level=1).compress(header + b"\n" + encoded_index)
    path = _path(organization_id, token_id, engine_ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        log.warning("export memo not written (%s): the next post is analysed in full", exc)
        temporary.unlink(missing_ok=True)
        return
    _trim_now_and_then()


def forget_all():
    shutil.rmtree(directory(), ignore_errors=True)


def _trim_now_and_then():
    now = time.monotonic()
    with _trim_lock:
        if now - _last_trim[0] < TRIM_EVERY:
            return
        _last_trim[0] = now
    trim()


def trim():
    """Delete the least recently written files until the directory fits the limit."""
    limit = settings.EXPORT_MEMO_MB * 1024 * 1024
    files = []
    try:
        with os.scandir(directory()) as entries:
            for entry in entries:
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                files.append((stat.st_mtime, stat.st_size, entry.path))
    except FileNotFoundError:
        return
    total = sum(size for _, size, _ in files)
    for _, size, path in sorted(files):
        if total <= limit:
            break
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        total -= size
