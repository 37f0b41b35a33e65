"""Digest and time values as the engine writes them (Go's go-digest and time.Time)."""

import re
from datetime import UTC, datetime

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
DIGEST_SCHEME = "sha256:"


def is_digest(value):
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def is_random(value):
    """Buildkit's IDs for operations that must never be cached."""
    return value.startswith("random:")


def parse_time(value):
    """An RFC 3339 time (nanoseconds allowed, any offset) as an aware UTC datetime, or None."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # Go's zero time with a positive offset lies before year 1 in UTC.
        return ZERO_TIME


def digest_prefix(text):
    """What an operator typed to find a digest, as a prefix of stored digests: with or
    without 'sha256:', in any case."""
    text = (text or "").strip().lower()
    if not text or text.startswith(DIGEST_SCHEME) or DIGEST_SCHEME.startswith(text):
        return text
    return DIGEST_SCHEME + text


def could_start_a_digest(prefix):
    """Whether some stored digest could start with `prefix` (from digest_prefix). Text
    that cannot is never sent to the database: PostgreSQL refuses a NUL outright."""
    hex_part = prefix.removeprefix(DIGEST_SCHEME)
    if hex_part == prefix:
        return DIGEST_SCHEME.startswith(prefix)
    return len(hex_part) <= 64 and all(ch in "0123456789abcdef" for ch in hex_part)
