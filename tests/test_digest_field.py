"""records.fields: identities as 32 bytes, seen as "sha256:<hex>"."""

import pytest

from records.fields import _prefix_range, is_sha256, to_bytes, to_text
from records.models import Record
from tests.buildkit_oracle import sha


@pytest.mark.once
def test_conversion_both_ways_and_refusals():
    digest = sha("x")
    assert to_text(to_bytes(digest)) == digest and len(to_bytes(digest)) == 32
    spaced = "sha256:" + "a" * 62 + " a"  # bytes.fromhex would skip the space
    for bad in ("sha256:" + "A" * 64, "sha512:" + "a" * 128, "sha256:abc", "", None, b"short", spaced,
                "sha256:" + "g" * 64, "SHA256:" + "a" * 64):
        assert to_bytes(bad) is None
        assert not is_sha256(bad)
    assert is_sha256(digest)
    with pytest.raises(ValueError):
        Record._meta.get_field("identity").get_prep_value("sha256:abc")


@pytest.mark.once
def test_a_text_prefix_is_a_range_of_bytes():
    assert _prefix_range("sha") == (b"", None)
    assert _prefix_range("sha256:") == (b"", None)
    assert _prefix_range("sha256:ab") == (b"\xab", b"\xac")
    assert _prefix_range("sha256:abc") == (b"\xab\xc0", b"\xab\xd0")
    assert _prefix_range("sha256:0ff") == (b"\x0f\xf0", b"\x10")
    assert _prefix_range("sha256:fff") == (b"\xff\xf0", None)
    assert _prefix_range("sha256:xy") is None and _prefix_range("md5:") is None
    digest = sha("y")
    for cut in range(7, 72):
        low, high = _prefix_range(digest[:cut])
        assert low <= to_bytes(digest) and (high is None or to_bytes(digest) < high)


@pytest.mark.django_db
def test_lookups_by_value_that_is_not_a_digest_match_nothing(org):
    Record.objects.create(organization=org, identity=sha("r"), digest=sha("d"))
    assert not Record.objects.filter(identity="sha256:abc").exists()
    assert not Record.objects.filter(identity__in=["nope", "sha512:" + "a" * 128]).exists()
    assert list(Record.objects.filter(identity__in=["nope", sha("r")]).values_list("identity", flat=True)) == [sha("r")]
    assert Record.objects.filter(identity__startswith=sha("r")[:9]).count() == 1
    assert not Record.objects.filter(identity__startswith="sha256:zz").exists()
    assert Record.objects.filter(identity__icontains=sha("r")[30:40].upper()).count() == 1
