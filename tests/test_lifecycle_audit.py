"""The lifecycle pass's record and audit entry: a pass that fails part way, who started a
pass, and the eviction counters every eviction path adds to."""

import logging
from datetime import timedelta

import pytest

from activity.models import Activity
from audit.models import Action, ActorKind, AuditEntry
from blobs.models import Blob
from retention import services
from retention.models import LifecyclePass
from tests.test_retention import MINUTE, blob_exists, grace, make_blob

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("builtin", "fresh_use_counts")]


def counters(org):
    return {(name, label): value for name, label, value in
            Activity.objects.filter(organization=org).values_list("name", "label", "value")}


def test_a_pass_that_fails_part_way_records_and_audits_what_it_deleted(org, monkeypatch):
    digest = make_blob(org, size=700, age=grace(org) + MINUTE)

    def broken(*args, **kwargs):
        raise RuntimeError("eviction broke")

    monkeypatch.setattr(services, "_evict", broken)
    [report] = services.collect_garbage(org)
    assert not blob_exists(org, digest)
    assert report.error == "RuntimeError: eviction broke"
    assert report.counts[services.UNREFERENCED_BLOBS] == 1 and report.freed_bytes == 700
    record = LifecyclePass.objects.get()
    assert record.counts == {services.UNREFERENCED_BLOBS: 1} and record.freed_bytes == 700
    assert record.error == "RuntimeError: eviction broke" and record.items[services.UNREFERENCED_BLOBS] == [digest]
    entry = AuditEntry.objects.get(action=Action.LIFECYCLE_DELETED)
    assert entry.bytes_freed == 700 and entry.details["error"] == "RuntimeError: eviction broke"
    assert entry.details["pass"] == record.pk


def test_a_pass_that_cannot_be_recorded_does_not_stop_the_others(org, other_org, monkeypatch, caplog):
    mine = make_blob(org, age=grace(org) + MINUTE)
    theirs = make_blob(other_org, age=grace(other_org) + MINUTE)
    create = LifecyclePass.objects.create

    def fail_for_acme(**fields):
        if fields["organization"] == org:
            raise RuntimeError("database hiccup")
        return create(**fields)

    monkeypatch.setattr(LifecyclePass.objects, "create", fail_for_acme)
    with caplog.at_level(logging.ERROR, logger="cacheweb.retention"):
        reports = services.collect_garbage()
    assert [r.organization for r in reports] == ["acme", "globex"]
    assert not blob_exists(org, mine) and not blob_exists(other_org, theirs)
    assert list(LifecyclePass.objects.values_list("organization__slug", flat=True)) == ["globex"]
    assert "could not record the pass" in caplog.text and "gc org=acme" in caplog.text
