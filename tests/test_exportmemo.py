"""Each engine's last /records body on disk (records.exportmemo): what it changes and
what it must never change."""

import os
import time

from records import exportmemo, graph as graphlib, keydiff
from records.models import Record, RecordInput
from tests.buildkit_oracle import key, link, output_key, post_records, random_key_id, result, root_key, sha

IMAGE = root_key(sha("docker-image://alpine"))


def build(n=3):
    ids = [random_key_id() for _ in range(n)]
    keys = [key(IMAGE, result("ref-image"))] + [key(i, result(f"ref-{m}")) for m, i in enumerate(ids)]
    links = [link(ids[0], IMAGE, 0, output_key(sha("exec 0")))] + [
        link(ids[m], ids[m - 1], 0, output_key(sha(f"exec {m}"))) for m in range(1, n)
    ]
    return keys, links


def grown(keys, links):
    new = random_key_id()
    return keys + [key(new, result("ref-new"))], links + [link(new, keys[-1]["ID"], 0, output_key(sha("exec new")))]


def memo_files():
    return sorted(p.name for p in exportmemo.directory().glob("*.zst")) if exportmemo.directory().exists() else []


def test_an_engine_post_is_kept_per_token_and_engine(client, org, token):
    keys, links = build()
    assert post_records(client, token, keys, links).status_code == 200
    files = memo_files()
    assert len(files) == 1 and files[0].startswith(f"{org.pk}-")
    previous = exportmemo.load(org.pk, int(files[0].split("-")[1]), None)
    assert previous is not None and len(previous.identities) == len(keys)


def test_records_gone_from_the_database_are_stored_again(client, org, token, monkeypatch):
    """A database restored from a backup older than the memo: the keys the memo says
    were stored are not; the post is analysed in full and every record is there after."""
    keys, links = build()
    assert post_records(client, token, keys, links).status_code == 200
    Record.objects.filter(organization=org).delete()
    full = []
    real = graphlib.analyse
    monkeypatch.setattr(graphlib, "analyse", lambda payload: full.append(1) or real(payload))
    keys, links = grown(keys, links)
    answer = post_records(client, token, keys, links)
    assert answer.status_code == 200
    assert full == [1]
    assert Record.objects.filter(organization=org).count() == len(keys)
    assert RecordInput.objects.filter(organization=org).count() == len(links)
    assert len(answer.json()["ExportRecords"]) == len(keys)


def test_an_unreadable_memo_means_a_full_analysis(client, org, token, monkeypatch, caplog):
    keys, links = build()
    assert post_records(client, token, keys, links).status_code == 200
    (path,) = exportmemo.directory().glob("*.zst")
    path.write_bytes(b"not zstd at all")
    diffed = []
    real = keydiff.analyse_changes
    monkeypatch.setattr(keydiff, "analyse_changes", lambda *a: diffed.append(1) or real(*a))
    keys, links = grown(keys, links)
    answer = post_records(client, token, keys, links)
    assert answer.status_code == 200
    assert [e["CacheRefID"] for e in answer.json()["ExportRecords"]] == ["ref-new"]
    assert diffed == [] and "unreadable" in caplog.text
    # Written again from this post: the next one is diffed.
    keys, links = grown(keys, links)
    assert post_records(client, token, keys, links).status_code == 200
    assert diffed == [1]


def test_the_memo_is_trimmed_oldest_first(client, org, settings):
    from accounts.models import EngineToken

    keys, links = build(40)
    tokens = [EngineToken.issue(org, label=f"e{n}") for n in range(3)]
    for n, (row, token) in enumerate(tokens):
        assert post_records(client, token, keys, links).status_code == 200
        for path in exportmemo.directory().glob(f"{org.pk}-{row.pk}-*.zst"):
            os.utime(path, (time.time() - 100 + n, time.time() - 100 + n))
    sizes = sorted(p.stat().st_size for p in exportmemo.directory().glob("*.zst"))
    # Room for two files, not three.
    settings.EXPORT_MEMO_MB = (sizes[-1] + sizes[-2] + 10) / (1024 * 1024)
    exportmemo.trim()
    assert memo_files() == sorted(f"{org.pk}-{row.pk}-0.zst" for row, _ in tokens[1:])


def test_a_zero_limit_keeps_nothing(client, org, token, settings, monkeypatch):
    settings.EXPORT_MEMO_MB = 0
    diffed = []
    real = keydiff.analyse_changes
    monkeypatch.setattr(keydiff, "analyse_changes", lambda *a: diffed.append(1) or real(*a))
    keys, links = build()
    for _ in range(2):
        keys, links = grown(keys, links)
        assert post_records(client, token, keys, links).status_code == 200
    assert memo_files() == [] and diffed == []
