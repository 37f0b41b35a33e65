"""JSON and time values exactly as Go's encoding/json and time packages write them.

The service sees bytes from Go, not from Python, so the details matter: compact output with
a trailing newline (json.Encoder), `<`, `>`, `&`, U+2028 and U+2029 escaped, nil slices as
`null`, and time.Time as RFC 3339 with up to nine fractional digits, trailing zeros dropped,
and the writer's own UTC offset.
"""

import json
import re
from dataclasses import dataclass

_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


def encode(value) -> bytes:
    """What json.NewEncoder(w).Encode(value) writes."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (_GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES[m.group()], text) + "\n").encode()


def go_list(items):
    """A Go slice that was never appended to marshals as null, not []."""
    items = list(items)
    return items or None


@dataclass(frozen=True, order=True)
class GoTime:
    """A wall-clock instant with nanoseconds and the UTC offset it was recorded in."""

    unix_ns: int
    offset_minutes: int = 0

    def marshal(self) -> str:
        seconds, nanos = divmod(self.unix_ns + self.offset_minutes * 60 * 10**9, 10**9)
        days, rem = divmod(seconds, 86400)
        year, month, day = _civil_from_days(days)
        hh, rem = divmod(rem, 3600)
        mm, ss = divmod(rem, 60)
        out = f"{year:04d}-{month:02d}-{day:02d}T{hh:02d}:{mm:02d}:{ss:02d}"
        if nanos:
            out += "." + f"{nanos:09d}".rstrip("0")
        if self.offset_minutes == 0:
            return out + "Z"
        sign = "+" if self.offset_minutes > 0 else "-"
        oh, om = divmod(abs(self.offset_minutes), 60)
        return f"{out}{sign}{oh:02d}:{om:02d}"


ZERO_TIME = "0001-01-01T00:00:00Z"

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_time(text) -> GoTime:
    """time.Time.UnmarshalJSON: RFC 3339, fraction optional. Raises ValueError like Go errors."""
    if not isinstance(text, str):
        raise ValueError(f"time must be a JSON string, got {type(text).__name__}")
    m = _RFC3339.match(text)
    if not m:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hh, mm, ss = (int(g) for g in m.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hh < 24 and mm < 60 and ss < 60):
        raise ValueError(f"time out of range: {text!r}")
    frac = m.group(7)
    nanos = int(frac[1:].ljust(9, "0")) if frac else 0
    zone = m.group(8)
    offset = 0 if zone in ("Z", "z") else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 60 + int(zone[4:6]))
    days = _days_from_civil(year, month, day)
    unix_ns = ((days * 86400 + hh * 3600 + mm * 60 + ss) - offset * 60) * 10**9 + nanos
    return GoTime(unix_ns, offset)


def _days_from_civil(y, m, d):
    # Howard Hinnant's algorithm: proleptic Gregorian calendar, any year (Go's zero time is year 1).
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z):
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d
