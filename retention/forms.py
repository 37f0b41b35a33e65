import re
from decimal import Decimal

from django import forms

# Binary units, as the dashboard shows sizes (filesizeformat): 1 GB = 1024³ bytes.
UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
         "g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4, "tb": 1024**4, "tib": 1024**4}
MAX_LIMIT = 1024**6  # 1 EB: anything above is a typing mistake
MAX_DAYS = 36500
SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


def parse_size(text):
    """'50 GB', '1.5TB', '0', '1073741824' -> bytes (a fraction of a byte dropped);
    ValueError with the reason."""
    match = SIZE.fullmatch(text.strip().lower())
    if not match or match.group(2) not in UNITS:
        raise ValueError("a size such as 50 GB, 500 MB or 1.5 TB (or 0 for no limit)")
    # Decimal: a float loses bytes of large sizes and turns "0.1 KB" into 102.4.
    number = Decimal(match.group(1))
    size = int(number * UNITS[match.group(2)])
    if size == 0 and number != 0:
        # 0 means no limit: the opposite of the tiny limit that was typed.
        raise ValueError(f"{text.strip()} is less than one byte; write 0 for no limit, or a size of at least 1 byte")
    if size > MAX_LIMIT:
        raise ValueError("at most 1024 PB")
    return size


class SizeField(forms.CharField):
    def clean(self, value):
        value = super().clean(value)
        if value in self.empty_values:
            return None
        try:
            return parse_size(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class StoragePolicyForm(forms.Form):
    storage_limit = SizeField(
        required=False, max_length=40, label="Storage limit",
        help_text="e.g. 50 GB (1 GB = 1024³ bytes); 0: no limit; empty: the default",
    )
    unused_after_days = forms.IntegerField(
        required=False, min_value=0, max_value=MAX_DAYS, label="Evict blobs unused for (days)",
        help_text="0: never; empty: the default",
    )


def size_text(size):
    """Bytes as the form shows them back: the largest unit that divides them exactly."""
    if size is None:
        return ""
    for unit, factor in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor} {unit}"
    return str(size)


def initial_for(policy):
    return {"storage_limit": size_text(policy.storage_limit), "unused_after_days": policy.unused_after_days}
