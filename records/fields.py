"""A sha256 digest stored as its 32 bytes and seen everywhere else as "sha256:<hex>".

Record.identity is on every /records lookup and in the largest unique index of the
graph: as bytes (bytea on PostgreSQL, a blob on SQLite) it takes 32 bytes instead of 71
characters, in the row and in the index. The ORM, the admin, the API and the engine's
answers keep seeing the same strings as before; only the column is compact.

Lookups by value (exact, in) convert their strings at the edge; a value that is not a
sha256 digest cannot be stored, so it matches nothing instead of raising. startswith (the
steps search by digest prefix) becomes a range of bytes, which the index serves;
contains/icontains (admin search) compare the hex text.
"""

from django.core.exceptions import EmptyResultSet
from django.db import models
from django.db.models import lookups

SCHEME = "sha256:"
LENGTH = 32
_HEX = frozenset("0123456789abcdef")
_TEXT_LENGTH = len(SCHEME) + 2 * LENGTH


def is_sha256(value):
    return _digest_bytes(value) is not None


def _digest_bytes(value):
    # A /records post converts every identity: decoding and re-encoding the hex is a
    # third of the cost of matching a pattern first (fromhex alone would also take
    # upper case and spaces).
    if not isinstance(value, str) or len(value) != _TEXT_LENGTH or not value.startswith(SCHEME):
        return None
    hex_part = value[len(SCHEME) :]
    try:
        raw = bytes.fromhex(hex_part)
    except ValueError:
        return None
    return raw if raw.hex() == hex_part else None


def to_bytes(value):
    """The 32 bytes of a "sha256:<64 lowercase hex>" string (bytes pass through), else None."""
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value)
        return value if len(value) == LENGTH else None
    return _digest_bytes(value)


def to_text(value):
    return SCHEME + bytes(value).hex()


class DigestBytesField(models.BinaryField):
    """A sha256 digest, as 32 bytes in the database and as "sha256:<hex>" in Python."""

    description = "sha256 digest stored as 32 bytes"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        if kwargs.get("editable") is False:
            del kwargs["editable"]
        return name, path, args, kwargs

    def from_db_value(self, value, expression, connection):
        return None if value is None else to_text(value)

    def to_python(self, value):
        if value is None or isinstance(value, str):
            return value
        return to_text(value)

    def get_prep_value(self, value):
        if value is None:
            return None
        converted = to_bytes(value)
        if converted is None:
            raise ValueError(f"not a sha256 digest: {value!r}")
        return converted

    def value_to_string(self, obj):
        # Serialization (dumpdata, backups) writes the text form, and loads it back.
        return self.value_from_object(obj)


def _plain(rhs):
    return not hasattr(rhs, "resolve_expression") and not hasattr(rhs, "as_sql")


@DigestBytesField.register_lookup
class DigestExact(lookups.Exact):
    def get_prep_lookup(self):
        self.matches_nothing = _plain(self.rhs) and self.rhs is not None and to_bytes(self.rhs) is None
        if self.matches_nothing:
            return self.rhs
        return super().get_prep_lookup()

    def as_sql(self, compiler, connection):
        if self.matches_nothing:
            raise EmptyResultSet  # no stored digest equals a value that is not one
        return super().as_sql(compiler, connection)


@DigestBytesField.register_lookup
class DigestIn(lookups.In):
    def get_prep_lookup(self):
        if _plain(self.rhs):
            self.rhs = [value for value in self.rhs if to_bytes(value) is not None]
        return super().get_prep_lookup()


def _prefix_range(prefix):
    """(low, high) bytes such that a digest starts with the text `prefix` exactly when
    low <= digest < high (high None: no upper bound); None when no digest can."""
    if SCHEME.startswith(prefix):
        return b"", None
    if not prefix.startswith(SCHEME):
        return None
    hex_part = prefix[len(SCHEME) :]
    if len(hex_part) > 2 * LENGTH or not _HEX.issuperset(hex_part):
        return None
    if len(hex_part) % 2:
        low, top = bytes.fromhex(hex_part + "0"), bytes.fromhex(hex_part + "f")
    else:
        low = top = bytes.fromhex(hex_part)
    # The smallest byte string greater than every string starting with `top`.
    high = top.rstrip(b"\xff")
    high = high[:-1] + bytes([high[-1] + 1]) if high else None
    return low, high


@DigestBytesField.register_lookup
class DigestStartsWith(lookups.Lookup):
    lookup_name = "startswith"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        if not _plain(self.rhs):
            raise ValueError("a digest prefix must be a plain string")
        bounds = _prefix_range(str(self.rhs))
        if bounds is None:
            raise EmptyResultSet
        low, high = bounds
        lhs, lhs_params = self.process_lhs(compiler, connection)
        binary = connection.Database.Binary
        if high is None:
            return f"{lhs} >= %s", [*lhs_params, binary(low)]
        return f"({lhs} >= %s AND {lhs} < %s)", [*lhs_params, binary(low), *lhs_params, binary(high)]


def _hex_text(lhs, connection):
    if connection.vendor == "postgresql":
        return f"('{SCHEME}' || encode({lhs}, 'hex'))"
    return f"('{SCHEME}' || lower(hex({lhs})))"


@DigestBytesField.register_lookup
class DigestContains(lookups.Lookup):
    """The text form contains the value: stored digests are lowercase, so icontains is the
    same lookup on a lowercased value."""

    lookup_name = "contains"
    prepare_rhs = False
    lower = False

    def as_sql(self, compiler, connection):
        if not _plain(self.rhs):
            raise ValueError("a digest search must be a plain string")
        lhs, params = self.process_lhs(compiler, connection)
        text = str(self.rhs)
        if self.lower:
            text = text.lower()
        pattern = "%" + connection.ops.prep_for_like_query(text) + "%"
        return f"{_hex_text(lhs, connection)} LIKE %s ESCAPE '\\'", [*params, pattern]


@DigestBytesField.register_lookup
class DigestIContains(DigestContains):
    lookup_name = "icontains"
    lower = True
