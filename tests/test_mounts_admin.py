"""Django admin for mount policies, mounts and snapshots."""

import pytest
from django.utils import timezone

from mounts import tasks
from mounts.models import CacheMount, MountPolicy, MountSnapshot, MountSwitch, SnapshotState

pytestmark = pytest.mark.django_db


@pytest.fixture
def snapshot(org):
    mount = CacheMount.objects.create(organization=org, name="go-mod")
    return MountSnapshot.objects.create(
        mount=mount,
        digest="sha256:" + "a" * 64,
        size=1234,
        state=SnapshotState.VERIFIED,
        verified_at=timezone.now(),
        contents_state="complete",
        contents={"files": 3, "top_level": [{"name": "pkg", "files": 3, "bytes": 99}]},
        file_count=3,
    )


def test_pages_render(admin_client, org, snapshot):
    MountPolicy.objects.create(organization=org, mode="patterns", patterns="go-*")
    pages = [
        "/admin/mounts/mountpolicy/",
        f"/admin/mounts/mountpolicy/{org.pk}/change/",
        "/admin/mounts/cachemount/",
        f"/admin/mounts/cachemount/{snapshot.mount.pk}/change/",
        "/admin/mounts/mountsnapshot/",
        f"/admin/mounts/mountsnapshot/{snapshot.pk}/change/",
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
    assert "go-mod" in admin_client.get("/admin/mounts/cachemount/").content.decode()


def test_pages_need_staff(client, snapshot):
    response = client.get("/admin/mounts/cachemount/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_switch_actions(admin_client, snapshot):
    mount = snapshot.mount
    for action, switch in [("switch_off", MountSwitch.OFF), ("switch_on", MountSwitch.ON), ("follow_policy", MountSwitch.POLICY)]:
        admin_client.post("/admin/mounts/cachemount/", {"action": action, "_selected_action": [mount.pk]})
        mount.refresh_from_db()
        assert mount.switch == switch


def test_mount_name_is_fixed_once_recorded(admin_client, snapshot):
    mount = snapshot.mount
    admin_client.post(
        f"/admin/mounts/cachemount/{mount.pk}/change/",
        {"name": "renamed", "switch": "off", "size_limit": "5000",
         "snapshots-TOTAL_FORMS": "1", "snapshots-INITIAL_FORMS": "1",
         "snapshots-MIN_NUM_FORMS": "0", "snapshots-MAX_NUM_FORMS": "1000",
         "snapshots-0-id": snapshot.pk, "snapshots-0-mount": mount.pk},
    )
    mount.refresh_from_db()
    assert (mount.name, mount.switch, mount.size_limit) == ("go-mod", "off", 5000)


def test_reindex_action_queues_a_forced_index(admin_client, snapshot, monkeypatch, django_capture_on_commit_callbacks):
    queued = []
    monkeypatch.setattr(tasks.index_snapshot_contents, "apply_async", lambda args, kwargs, **kw: queued.append((args, kwargs)))
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post("/admin/mounts/mountsnapshot/", {"action": "reindex", "_selected_action": [snapshot.pk]})
    assert queued == [((snapshot.pk,), {"force": True})]
