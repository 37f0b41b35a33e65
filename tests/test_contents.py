"""The streaming contents indexer (blobs/contents.py): real archives, broken ones, bombs."""

import gzip
import io
import os
import tarfile
import time

import pytest
import zstandard

from blobs.contents import COMPLETE, INVALID, TRUNCATED, IndexLimits, index_stream
from tests.mount_archives import expected_contents, make_tree, tar_bytes, tar_zstd

GENEROUS = IndexLimits(max_seconds=60, max_entries=1_000_000, max_bytes=1 << 40)


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "mount")


def test_tar_zstd_numbers_match_the_directory(tree):
    blob = tar_zstd(tree)
    summary = index_stream(io.BytesIO(blob), GENEROUS)
    want = expected_contents(tree)

    assert summary.status == COMPLETE, summary.reason
    assert summary.compression == "zstd"
    assert summary.files == want["files"]
    assert summary.directories == want["directories"]
    assert summary.symlinks == 1
    assert summary.total_bytes == want["total_bytes"]
    assert summary.top_level == want["top_level"]
    assert summary.root_files == want["root_files"]
    assert summary.largest_files[0] == want["largest_files"][0]
    assert [f["size"] for f in summary.largest_files] == sorted(
        (f["size"] for f in summary.largest_files), reverse=True
    )
    assert summary.stored_bytes_read == len(blob)
    assert summary.stream_bytes == len(tar_bytes(tree))


@pytest.mark.parametrize("compress,name", [(gzip.compress, "gzip"), (lambda b: b, "none")])
def test_gzip_and_plain_tar_give_the_same_numbers(tree, compress, name):
    summary = index_stream(io.BytesIO(compress(tar_bytes(tree))), GENEROUS)
    zstd_summary = index_stream(io.BytesIO(tar_zstd(tree)), GENEROUS)
    assert summary.status == COMPLETE
    assert summary.compression == name
    assert summary.as_dict() | {"compression": "", "seconds": 0, "stored_bytes_read": 0} == (
        zstd_summary.as_dict() | {"compression": "", "seconds": 0, "stored_bytes_read": 0}
    )


@pytest.mark.parametrize(
    "make_blob",
    [
        pytest.param(lambda tree: os.urandom(4096), id="random-bytes"),
        pytest.param(lambda tree: b"", id="empty"),
        pytest.param(lambda tree: zstandard.ZstdCompressor().compress(b"not a tar\n" * 500), id="zstd-of-text"),
        pytest.param(lambda tree: tar_zstd(tree)[:-40], id="truncated-zstd"),
        pytest.param(lambda tree: zstandard.ZstdCompressor().compress(tar_bytes(tree)[:2048]), id="truncated-tar"),
        pytest.param(lambda tree: tar_zstd(tree)[:4] + os.urandom(2000), id="zstd-magic-then-garbage"),
        pytest.param(lambda tree: gzip.compress(tar_bytes(tree))[:-30], id="truncated-gzip"),
    ],
)
def test_invalid_blobs_are_reported_invalid(tree, make_blob):
    summary = index_stream(io.BytesIO(make_blob(tree)), GENEROUS)
    assert summary.status == INVALID
    assert summary.reason


def _zeros_bomb(declared):
    """A tar+zstd whose single file claims `declared` bytes of zeros: a few hundred KB
    stored, gigabytes once decompressed (repeated zstd frames of 64 MiB each)."""
    header = tarfile.TarInfo("bomb/zeros")
    header.size = declared
    frame = zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20))
    return zstandard.ZstdCompressor().compress(header.tobuf()) + frame * (declared // (64 << 20))


def test_zstd_bomb_is_cut_off_at_the_byte_bound():
    blob = _zeros_bomb(16 << 30)
    assert len(blob) < 1 << 20
    started = time.monotonic()
    summary = index_stream(io.BytesIO(blob), IndexLimits(max_seconds=60, max_entries=1000, max_bytes=256 << 20))
    assert time.monotonic() - started < 5
    assert summary.status == TRUNCATED
    assert summary.reason == "bytes"
    assert summary.stream_bytes == 256 << 20
    # What was seen before the cut is still reported.
    assert summary.files == 1
    assert summary.largest_files == [{"path": "bomb/zeros", "size": 16 << 30}]


def test_zstd_bomb_is_cut_off_at_the_time_bound():
    blob = _zeros_bomb(64 << 30)
    started = time.monotonic()
    summary = index_stream(io.BytesIO(blob), IndexLimits(max_seconds=0.5, max_entries=1000, max_bytes=1 << 40))
    elapsed = time.monotonic() - started
    assert summary.status == TRUNCATED
    assert summary.reason == "time"
    assert elapsed < 2.5
    assert summary.stream_bytes < 64 << 30


def test_tar_with_huge_numbers_of_entries_is_cut_off_at_the_entry_bound():
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(50_000):
            tar.addfile(tarfile.TarInfo(f"d{i % 7}/f{i}"))
    blob = zstandard.ZstdCompressor().compress(raw.getvalue())
    started = time.monotonic()
    summary = index_stream(io.BytesIO(blob), IndexLimits(max_seconds=60, max_entries=5_000, max_bytes=1 << 40))
    assert time.monotonic() - started < 5
    assert summary.status == TRUNCATED
    assert summary.reason == "entries"
    assert summary.entries == 5_000
    assert summary.files == 5_000
    assert sum(d["files"] for d in summary.top_level) == 5_000


def test_many_top_level_names_are_summed_beyond_the_shown_ones():
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for i in range(30):
            info = tarfile.TarInfo(f"dir{i:02d}/file")
            info.size = i + 1
            tar.addfile(info, io.BytesIO(b"x" * (i + 1)))
    summary = index_stream(io.BytesIO(raw.getvalue()), GENEROUS)
    assert summary.status == COMPLETE
    assert len(summary.top_level) == 21
    assert summary.top_level[0] == {"name": "dir29", "files": 1, "bytes": 30}
    assert summary.top_level[-1]["directories"] == 10
    assert summary.top_level[-1]["bytes"] == sum(range(1, 11))
    assert sum(d["bytes"] for d in summary.top_level) == summary.total_bytes


def test_oversized_pax_header_is_refused_without_buffering_it():
    # A pax header that claims 4 GiB: tarfile would read all of it into memory.
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 4 << 30
    frame = zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20))
    blob = zstandard.ZstdCompressor().compress(header.tobuf(tarfile.USTAR_FORMAT)) + frame * 64
    started = time.monotonic()
    summary = index_stream(io.BytesIO(blob), GENEROUS)
    assert time.monotonic() - started < 2
    assert summary.status == INVALID
    assert "extension header" in summary.reason


def test_zstd_window_larger_than_the_cap_is_refused():
    # Streamed without a content size, so the frame header keeps the 1 GiB window.
    params = zstandard.ZstdCompressionParameters.from_level(
        1, window_log=30, enable_ldm=True, write_content_size=False
    )
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    blob = compressor.compress(tarfile.TarInfo("x").tobuf() + bytes(1024)) + compressor.flush()
    assert zstandard.get_frame_parameters(blob).window_size == 1 << 30
    summary = index_stream(io.BytesIO(blob), GENEROUS)
    assert summary.status == INVALID
    assert "zstd" in summary.reason


def test_hostile_names_become_storable_text():
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        info = tarfile.TarInfo("/abs/\udcff-bad-\u00e9.bin")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    summary = index_stream(io.BytesIO(raw.getvalue()), GENEROUS)
    assert summary.status == COMPLETE
    path = summary.largest_files[0]["path"]
    assert path.startswith("abs/")
    path.encode("utf-8")  # no lone surrogates left
