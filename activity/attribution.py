"""Which engine made a call: a best guess, since only /config names the engine.

An engine calls /config at start with its id; the service remembers the token and client
address it came with (accounts.Engine.last_token, remote_addr). A later call with the same
token from the same address is taken to be the engine most recently seen with both. Two
engines behind one NAT address sharing a token are told apart by nothing the protocol
sends, so the guess then names the one that called /config last.

Guesses are cached in this process for GUESS_SECONDS, so that an engine's stream of
calls costs one query per that many seconds, not one per call.
"""

import threading
import time
from typing import NamedTuple

from django.db.models.signals import post_delete

from accounts.models import Engine

GUESS_SECONDS = 15.0
# Far more (token, address) pairs than a busy process sees in GUESS_SECONDS.
MAX_CACHED = 4096


class Guess(NamedTuple):
    pk: int
    engine_id: str


_cache = {}
_lock = threading.Lock()


def _key(token, remote_addr):
    return (token.pk, remote_addr or "")


def remember(token, remote_addr, engine):
    """An engine just called /config with this token from this address."""
    if token is None or engine is None:
        return
    with _lock:
        _cache[_key(token, remote_addr)] = (time.monotonic() + GUESS_SECONDS, Guess(engine.pk, engine.engine_id))


def guess(token, remote_addr):
    """Guess(pk, engine_id) of the engine behind a call, or None when no engine was seen
    with this token from this address."""
    if token is None or not remote_addr:
        return None
    key = _key(token, remote_addr)
    now = time.monotonic()
    cached = _cache.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    row = (
        Engine.objects.filter(organization_id=token.organization_id, last_token=token, remote_addr=remote_addr)
        .order_by("-last_seen", "-pk")
        .values_list("pk", "engine_id")
        .first()
    )
    found = Guess(*row) if row else None
    with _lock:
        if len(_cache) >= MAX_CACHED:
            _cache.clear()
        _cache[key] = (now + GUESS_SECONDS, found)
    return found


def forget_all():
    with _lock:
        _cache.clear()


def _engine_deleted(sender, instance, **kwargs):
    # A guess naming a deleted engine would be written as a foreign key to a missing row.
    with _lock:
        for key, (expires, found) in list(_cache.items()):
            if found is not None and found.pk == instance.pk:
                del _cache[key]


post_delete.connect(_engine_deleted, sender=Engine, dispatch_uid="activity.attribution.engine_deleted")
