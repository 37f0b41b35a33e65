"""The dashboard's cache pages: totals, the blob and mount listings, and eviction."""

from datetime import timedelta
from pathlib import Path

import pytest

from accounts.models import Engine
from blobs.models import Blob
from blobs.storage import get_store
from dashboard import queries
from mounts import services as mount_services
from mounts.models import CacheMount, MountSnapshot, MountSwitch, SkipReason
from records.models import Record, Result
from tests.buildkit_oracle import descriptor, get_import, key, post_layers, post_records, result, root_key, sha, store_blob
from tests.cache_rows import NOW, a_blob, a_layer, a_snapshot
from tests.support import engine_request


# Every test here uses the built-in storage.
pytestmark = pytest.mark.usefixtures("builtin")


def blob_file(org, digest):
    return Path(get_store().path(org.pk, digest))


@pytest.fixture
def mount(org):
    return CacheMount.objects.create(organization=org, name="go-mod")


def login(client, operators, who):
    client.force_login(operators[who])
    return client


# ---- who sees what ----------------------------------------------------------------------


def pages(mount):
    return ["/orgs/acme/cache/", "/orgs/acme/cache/blobs/", "/orgs/acme/cache/mounts/",
            f"/orgs/acme/cache/mounts/{mount.pk}/"]


@pytest.mark.django_db
class TestScoping:
    def test_anonymous_is_sent_to_login(self, client, mount):
        for path in pages(mount):
            resp = client.get(path)
            assert resp.status_code == 302 and resp["Location"].startswith("/login/"), path

    def test_outsider_gets_404(self, client, operators, mount):
        login(client, operators, "outsider")
        for path in pages(mount) + [f"/orgs/acme/cache/mounts/{mount.pk}/evict"]:
            assert client.get(path).status_code == 404, path

    def test_members_see_the_pages(self, client, operators, mount):
        for who in ("maintainer", "viewer"):
            login(client, operators, who)
            for path in pages(mount):
                assert client.get(path).status_code == 200, (who, path)

    def test_nav_links_the_cache_page(self, client, operators, org):
        page = login(client, operators, "viewer").get("/orgs/acme/").content.decode()
        assert 'href="/orgs/acme/cache/"' in page

    def test_another_orgs_mount_is_404(self, client, operators, other_org):
        theirs = CacheMount.objects.create(organization=other_org, name="go-mod")
        login(client, operators, "maintainer")
        assert client.get(f"/orgs/acme/cache/mounts/{theirs.pk}/").status_code == 404
        assert client.get(f"/orgs/globex/cache/mounts/{theirs.pk}/").status_code == 404
        assert client.post(f"/orgs/acme/cache/mounts/{theirs.pk}/evict").status_code == 404


# ---- totals and listings ------------------------------------------------------------------


@pytest.mark.django_db
def test_totals(client, operators, org, other_org, mount):
    for i in range(3):
        a_layer(org, a_blob(org, f"layer {i}", 1000 * (i + 1)), 1000 * (i + 1), results=2)
    a_blob(org, "pending", 50, state="pending")
    incomplete = Result.objects.filter(record__organization=org).order_by("pk").first()
    Result.objects.filter(pk=incomplete.pk).update(complete=False)
    a_snapshot(mount, a_blob(org, "old", 400), 400, minutes_ago=10)
    a_snapshot(mount, a_blob(org, "new", 300), 300)
    other = CacheMount.objects.create(organization=org, name="npm")
    a_snapshot(other, a_blob(org, "npm", 20), 20)
    a_snapshot(other, a_blob(org, "npm-gone", 7), 7, released=True, minutes_ago=20)
    CacheMount.objects.create(organization=org, name="never-uploaded")
    # Another organization's cache counts for nothing here.
    a_layer(other_org, a_blob(other_org, "theirs", 99999), 99999)
    a_snapshot(CacheMount.objects.create(organization=other_org, name="go-mod"), sha("theirs"), 99999)

    resp = login(client, operators, "viewer").get("/orgs/acme/cache/")
    assert resp.context["totals"] == queries.Totals(
        verified_blobs=7,
        verified_bytes=6000 + 400 + 300 + 20 + 7,
        pending_blobs=1,
        records=6,
        results=6,
        complete_results=5,
        layers=3,
        mounts=3,
        current_snapshot_bytes=300 + 20,
        live_snapshot_bytes=400 + 300 + 20,
    )
    page = resp.content.decode()
    assert "6.6\xa0KB" in page  # 6727 bytes of verified blobs
    assert sha("theirs") not in page
    # Largest first; recently used lists only blobs that were used.
    assert [b.digest for b in resp.context["largest"]][:3] == [sha("layer 2"), sha("layer 1"), sha("layer 0")]
    assert resp.context["recent"] == []


@pytest.mark.django_db
def test_blob_rows_say_what_each_blob_is(client, operators, org, mount):
    builder = Engine.objects.create(organization=org, engine_id="builder-7")
    uploader = Engine.objects.create(organization=org, engine_id="laptop-3")
    a_layer(org, a_blob(org, "layer", 10), 10, results=3, engine=builder)
    a_snapshot(mount, a_blob(org, "snapshot", 20), 20, engine=uploader)
    a_snapshot(CacheMount.objects.create(organization=org, name="npm"), a_blob(org, "released", 30), 30, released=True)
    a_blob(org, "loose", 40)

    resp = login(client, operators, "viewer").get("/orgs/acme/cache/blobs/")
    rows = {b.digest: b for b in resp.context["page"].object_list}
    layer, snapshot, released, loose = (rows[sha(n)] for n in ("layer", "snapshot", "released", "loose"))
    assert (layer.in_layer, layer.result_count, layer.exporter.engine_id) == (True, 3, "builder-7")
    assert (snapshot.snapshot_mount.name, snapshot.exporter.engine_id) == ("go-mod", "laptop-3")
    assert (released.snapshot_mount, released.released_mount.name) == (None, "npm")
    assert (loose.in_layer, loose.snapshot_mount, loose.released_mount, loose.exporter) == (False, None, None, None)
    page = resp.content.decode()
    assert "3 steps</a>" in page and "builder-7" in page
    assert "snapshot of mount" in page and "released snapshot of mount" in page and "unreferenced" in page
    # The full digest is in the row (copyable) and in its title (hover).
    assert f'<code class="digest" title="{sha("layer")}">{sha("layer")}</code>' in page


@pytest.mark.django_db
def test_blobs_sort_and_page_on_the_server(client, operators, org):
    for i in range(120):
        a_blob(org, f"b{i:03}", 1000 + i, uses=i % 7, last_used=NOW - timedelta(minutes=i) if i % 2 else None,
               verified_days_ago=i)
    login(client, operators, "viewer")

    def digests(query):
        resp = client.get("/orgs/acme/cache/blobs/" + query)
        assert resp.status_code == 200
        return [b.digest for b in resp.context["page"].object_list], resp.context["page"]

    first, page = digests("")
    assert len(first) == 50 and page.paginator.num_pages == 3
    assert first[:2] == [sha("b119"), sha("b118")]  # largest first by default
    last, page = digests("?page=3")
    assert len(last) == 20 and last[-1] == sha("b000")
    assert digests("?page=999")[1].number == 3  # past the end: the last page
    assert digests("?sort=size")[0][:2] == [sha("b000"), sha("b001")]
    # Most recently used first; never-used blobs (the even ones) after every used one.
    by_use = [d for p in (1, 2, 3) for d in digests(f"?sort=-last_used&page={p}")[0]]
    assert by_use[:2] == [sha("b001"), sha("b003")]
    assert set(by_use[60:]) == {sha(f"b{i:03}") for i in range(0, 120, 2)}
    assert len(set(by_use)) == 120  # pages neither repeat nor skip a row
    uses = [Blob.objects.get(digest=d).use_count for d in digests("?sort=-uses")[0]]
    assert uses == sorted(uses, reverse=True) and uses[0] == 6
    assert digests("?sort=-verified")[0][0] == sha("b000")  # verified most recently
    assert digests("?sort=nonsense")[0] == first

    # Pager links keep the sort.
    page_html = client.get("/orgs/acme/cache/blobs/?sort=size").content.decode()
    assert 'href="?sort=size&amp;page=2"' in page_html


@pytest.mark.django_db
def test_blobs_filter_by_digest_prefix(client, operators, org, other_org):
    mine = a_blob(org, "find me", 10)
    a_blob(org, "not me", 10)
    a_blob(other_org, "find me", 10)
    login(client, operators, "viewer")
    hex_part = mine.removeprefix("sha256:")
    for typed in (mine[:15], hex_part[:8], hex_part[:8].upper(), f"  {mine}  "):
        resp = client.get("/orgs/acme/cache/blobs/", {"q": typed})
        assert [b.digest for b in resp.context["page"].object_list] == [mine], typed
    assert list(client.get("/orgs/acme/cache/blobs/", {"q": "ffff" * 16}).context["page"].object_list) == []


@pytest.mark.django_db
def test_listings_cost_the_same_queries_whatever_their_length(
    client, operators, org, mount, django_assert_max_num_queries
):
    engine = Engine.objects.create(organization=org, engine_id="builder")
    for i in range(60):
        digest = a_blob(org, f"blob {i}", 100 + i, last_used=NOW)
        if i % 3 == 0:
            a_layer(org, digest, 100 + i, results=2, engine=engine)
        elif i % 3 == 1:
            a_snapshot(CacheMount.objects.create(organization=org, name=f"m{i}"), digest, 100 + i, engine=engine,
                       released=i % 2 == 0)
    login(client, operators, "maintainer")
    # Session, user, organization, role; then count, page ids, their usage, mounts, engines,
    # the steps using them.
    with django_assert_max_num_queries(10):
        assert client.get("/orgs/acme/cache/blobs/").status_code == 200
    # Six for the totals, two short step lists (rows, dependants, descriptions) and two
    # short blob lists.
    with django_assert_max_num_queries(28):
        assert client.get("/orgs/acme/cache/").status_code == 200
    # Session, user, organization, role, count, rows, current snapshots, policy.
    with django_assert_max_num_queries(8):
        resp = client.get("/orgs/acme/cache/mounts/")
    assert len(resp.context["page"].object_list) == 21
    # Session, user, organization, role, count, rows, dependants, shared descriptions,
    # the engines to filter by.
    with django_assert_max_num_queries(9):
        resp = client.get("/orgs/acme/cache/steps/")
    assert len(resp.context["page"].object_list) == 40


@pytest.mark.django_db
def test_mounts_page_shows_each_mount_and_its_current_snapshot(client, operators, org, mount):
    engine = Engine.objects.create(organization=org, engine_id="ci-runner-1")
    a_snapshot(mount, a_blob(org, "older", 2048), 2048, minutes_ago=30)
    a_snapshot(mount, a_blob(org, "current", 3 * 1024 * 1024), 3 * 1024 * 1024, engine=engine,
               uncompressed_bytes=10 * 1024 * 1024, file_count=1234)
    CacheMount.objects.filter(pk=mount.pk).update(last_synced_at=NOW, last_skip_reason=SkipReason.MOUNT_LIMIT)
    CacheMount.objects.create(organization=org, name="pnpm-store", switch=MountSwitch.OFF)

    resp = login(client, operators, "viewer").get("/orgs/acme/cache/mounts/")
    go_mod, pnpm = resp.context["page"].object_list
    assert (go_mod.current.digest, go_mod.live_snapshots, go_mod.synced) == (sha("current"), 2, True)
    assert (pnpm.current, pnpm.synced) == (None, False)
    page = resp.content.decode()
    for text in ("3.0\xa0MB", "10.0\xa0MB", "1,234", "ci-runner-1", "above the mount&#x27;s size limit", "not synced"):
        assert text in page, text


@pytest.mark.django_db
def test_mount_detail_shows_the_contents_summary(client, operators, org, mount):
    contents = {
        "status": "complete", "reason": "",
        "top_level": [{"name": "pkg", "files": 5, "bytes": 190000}, {"name": "go-build", "files": 2, "bytes": 65000}],
        "root_files": {"files": 1, "bytes": 42},
        "largest_files": [{"path": "pkg/mod/cache/download/lib.zip", "size": 120000}],
    }
    a_snapshot(mount, a_blob(org, "indexed", 5000), 5000, contents=contents, contents_state="complete",
               file_count=8, uncompressed_bytes=255042)
    a_snapshot(mount, sha("released long ago"), 100, released=True, minutes_ago=60)
    resp = login(client, operators, "viewer").get(f"/orgs/acme/cache/mounts/{mount.pk}/")
    page = resp.content.decode()
    for text in ("pkg/mod/cache/download/lib.zip", "117.2\xa0KB", "go-build", "files at the top", "249.1\xa0KB"):
        assert text in page, text
    assert [s.role for s in resp.context["snapshots"]] == ["current", "released"]
    assert [s.blob_stored for s in resp.context["snapshots"]] == [True, False]
    assert "Evict its snapshots" not in page  # a viewer


# ---- evicting a blob ----------------------------------------------------------------------


def evict_url(digest, slug="acme"):
    return f"/orgs/{slug}/cache/blobs/{digest}/evict"


@pytest.mark.django_db
def test_maintainer_confirms_then_evicts_a_blob(client, operators, org):
    digest = a_blob(org, "layer", 4096)
    a_layer(org, digest, 4096, results=2)
    path = blob_file(org, digest)
    assert path.exists()
    login(client, operators, "maintainer")
    listing = client.get("/orgs/acme/cache/blobs/?sort=size").content.decode()
    assert f'aria-label="evict {digest}"' in listing

    back = "/orgs/acme/cache/blobs/?sort=size&q=abc"
    confirm = client.get(evict_url(digest), {"next": back})
    page = confirm.content.decode()
    assert confirm.status_code == 200 and 'id="confirm-evict"' in page and "csrfmiddlewaretoken" in page
    assert "2 results with this layer" in page
    assert Blob.objects.filter(digest=digest).exists()  # the GET changes nothing

    resp = client.post(evict_url(digest), {"next": back})
    assert resp.status_code == 302 and resp["Location"] == back
    assert not Blob.objects.filter(digest=digest).exists() and not path.exists()
    assert not Result.objects.filter(complete=True).exists()
    assert not Record.objects.filter(has_result=True).exists()
    shown = client.get(back).content.decode()
    assert f"Evicted {digest[:19]}" in shown and "2 results using it" in shown


@pytest.mark.django_db
def test_eviction_is_csrf_protected(operators, org):
    from django.test import Client

    digest = a_blob(org, "guarded", 10)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(operators["maintainer"])
    assert strict.post(evict_url(digest)).status_code == 403
    assert Blob.objects.filter(digest=digest).exists()


@pytest.mark.django_db
def test_viewer_cannot_evict_and_sees_no_button(client, operators, org, mount):
    digest = a_blob(org, "kept", 10)
    a_snapshot(mount, digest, 10)
    login(client, operators, "viewer")
    for path in ("/orgs/acme/cache/", "/orgs/acme/cache/blobs/", f"/orgs/acme/cache/mounts/{mount.pk}/"):
        page = client.get(path).content.decode()
        assert "Evict" not in page and "/evict" not in page, path
    assert client.get(evict_url(digest)).status_code == 403
    assert client.post(evict_url(digest)).status_code == 403
    assert client.post(f"/orgs/acme/cache/mounts/{mount.pk}/evict").status_code == 403
    assert blob_file(org, digest).exists() and Blob.objects.filter(digest=digest).exists()
    assert MountSnapshot.objects.count() == 1


@pytest.mark.django_db
def test_another_orgs_blob_is_404_and_stays(client, operators, org, other_org):
    theirs = a_blob(other_org, "theirs", 10)
    login(client, operators, "maintainer")
    assert client.post(evict_url(theirs)).status_code == 404
    assert client.get(evict_url(theirs)).status_code == 404
    login(client, operators, "outsider")
    assert client.post(evict_url(theirs, "acme")).status_code == 404
    assert client.post(evict_url(theirs, "globex")).status_code == 404
    assert Blob.objects.filter(organization=other_org, digest=theirs).exists()
    assert blob_file(other_org, theirs).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("digest", [sha("never stored"), "sha256:zz", "not-a-digest", "sha256:" + "0" * 200])
def test_evicting_an_unknown_digest_is_404(client, operators, org, digest):
    a_blob(org, "present", 10)
    login(client, operators, "maintainer")
    assert client.post(evict_url(digest)).status_code == 404
    assert client.get(evict_url(digest)).status_code == 404
    assert Blob.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("path", [
    "/orgs/acme/cache/blobs/?q=%00", "/orgs/acme/cache/blobs/?q=3f%000a", "/orgs/acme/cache/blobs/?q=%C3%A9t%C3%A9",
    "/orgs/acme/cache/blobs/sha256%3A%00/evict", "/orgs/acme/cache/blobs/%00/evict",
])
def test_odd_digests_and_prefixes_are_no_error(client, operators, org, path):
    """Typed or linked text no digest can hold (NUL, which PostgreSQL refuses in a query,
    or non-hex) finds nothing rather than failing."""
    a_blob(org, "present", 10)
    login(client, operators, "maintainer")
    resp = client.get(path)
    assert resp.status_code in (200, 404)
    if resp.status_code == 200:
        assert list(resp.context["page"].object_list) == []
    else:
        assert client.post(path).status_code == 404
    assert Blob.objects.count() == 1


@pytest.mark.django_db
def test_a_disk_that_refuses_the_deletion_evicts_nothing_and_says_so(client, operators, org, mount, monkeypatch):
    """The built-in store's unlink failing (a read-only or failing disk) is the store not
    answering, as for S3 and as retention takes it: a message, not a 500."""
    import errno

    from blobs.storage import FileSystemBlobStore

    digest = a_blob(org, "stuck", 10)
    a_snapshot(mount, digest, 10)

    def refuse(self, org_id, digest):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(FileSystemBlobStore, "delete", refuse)
    login(client, operators, "maintainer")
    resp = client.post(evict_url(digest), follow=True)
    assert resp.status_code == 200 and "Nothing was evicted" in resp.content.decode()
    assert Blob.objects.filter(digest=digest).exists() and blob_file(org, digest).exists()
    resp = client.post(f"/orgs/acme/cache/mounts/{mount.pk}/evict", follow=True)
    assert resp.status_code == 200 and "the blob store did not answer" in resp.content.decode()
    assert Blob.objects.filter(digest=digest).exists()


@pytest.mark.django_db
def test_eviction_never_redirects_off_site(client, operators, org):
    login(client, operators, "maintainer")
    for target in ("https://evil.example/", "//evil.example/x"):
        digest = a_blob(org, target, 10)
        resp = client.post(evict_url(digest), {"next": target})
        assert resp["Location"] == "/orgs/acme/cache/blobs/"


@pytest.mark.django_db
def test_evict_needs_get_or_post(client, operators, org):
    digest = a_blob(org, "x", 10)
    login(client, operators, "maintainer")
    assert client.put(evict_url(digest)).status_code == 405
    assert Blob.objects.filter(digest=digest).exists()


IMAGE = root_key(sha("docker-image://golang"))


@pytest.mark.django_db
def test_evicted_layer_leaves_the_import_and_is_asked_for_again(client, operators, org, token):
    """Through the engine endpoints: an engine exports a result, a maintainer evicts its
    layer from the dashboard, and the next /import no longer offers it."""
    assert engine_request(client, "GET", "/magicache/config", token, {"EngineID": "builder-1"}).status_code == 200
    keys = [key(IMAGE, result("r"))]
    asked = post_records(client, token, keys, []).json()["ExportRecords"]
    store_blob(org, sha("only layer"), 10)
    reply = post_layers(client, token, [{"RecordDigest": asked[0]["Digest"], "Layers": [descriptor(sha("only layer"), 10)]}])
    assert reply.json()["Refused"] == []
    assert [layer["blob"] for layer in get_import(client, token)["layers"]] == [sha("only layer")]

    login(client, operators, "maintainer")
    listing = client.get("/orgs/acme/cache/blobs/").content.decode()
    assert "1 step</a>" in listing and "builder-1" in listing
    assert client.post(evict_url(sha("only layer"))).status_code == 302

    assert get_import(client, token) == {"layers": [], "records": []}
    again = post_records(client, token, keys, []).json()["ExportRecords"]
    assert [entry["CacheRefID"] for entry in again] == ["r"]


# ---- evicting a mount ---------------------------------------------------------------------


@pytest.mark.django_db
def test_evict_mount_deletes_its_snapshots_and_the_blobs_only_it_held(org, other_org, mount):
    only_here = a_blob(org, "only here", 100)
    shared = a_blob(org, "shared with npm", 200)
    also_layer = a_blob(org, "also a layer", 300)
    released_elsewhere = a_blob(org, "released by npm", 400)
    a_snapshot(mount, only_here, 100)
    a_snapshot(mount, shared, 200, minutes_ago=5)
    a_snapshot(mount, also_layer, 300, minutes_ago=10)
    a_snapshot(mount, released_elsewhere, 400, released=True, minutes_ago=20)
    MountSnapshot.objects.create(mount=mount, digest=sha("never arrived"), size=5, state="failed")
    npm = CacheMount.objects.create(organization=org, name="npm")
    a_snapshot(npm, shared, 200)
    a_snapshot(npm, released_elsewhere, 400, released=True, minutes_ago=30)
    a_layer(org, also_layer, 300)
    # The same bytes in another organization are that organization's own.
    theirs = a_blob(other_org, "only here", 100)

    deleted, freed = mount_services.evict_mount(mount)

    assert deleted == 5
    assert freed == {only_here: 100, released_elsewhere: 400}
    assert not MountSnapshot.objects.filter(mount=mount).exists()
    assert MountSnapshot.objects.filter(mount=npm).count() == 2
    remaining = set(Blob.objects.filter(organization=org).values_list("digest", flat=True))
    assert remaining == {shared, also_layer}
    assert not blob_file(org, only_here).exists() and blob_file(org, shared).exists()
    assert blob_file(other_org, theirs).exists()
    assert CacheMount.objects.filter(pk=mount.pk).exists()  # its settings stay


@pytest.mark.django_db
def test_evict_mount_counts_no_bytes_for_an_upload_that_never_arrived(org, mount):
    stored = a_blob(org, "stored", 1000)
    a_snapshot(mount, stored, 1000)
    # An upload offered (its size announced) whose bytes are not here yet.
    uploading = a_blob(org, "uploading", 5_000_000, state="pending")
    MountSnapshot.objects.create(mount=mount, digest=uploading, size=5_000_000, state="pending")

    deleted, freed = mount_services.evict_mount(mount)

    assert deleted == 2 and not Blob.objects.exists()
    assert freed == {stored: 1000, uploading: 0}


@pytest.mark.django_db
def test_maintainer_evicts_a_mount_from_its_page(client, operators, org, mount):
    a_snapshot(mount, a_blob(org, "current", 2048), 2048)
    a_snapshot(mount, a_blob(org, "kept", 1024), 1024, minutes_ago=5)
    login(client, operators, "maintainer")
    assert 'id="evict-mount"' in client.get(f"/orgs/acme/cache/mounts/{mount.pk}/").content.decode()
    confirm = client.get(f"/orgs/acme/cache/mounts/{mount.pk}/evict").content.decode()
    assert "Evict 2 snapshots" in confirm and "3.0\xa0KB" in confirm
    resp = client.post(f"/orgs/acme/cache/mounts/{mount.pk}/evict", follow=True)
    assert resp.redirect_chain == [(f"/orgs/acme/cache/mounts/{mount.pk}/", 302)]
    page = resp.content.decode()
    assert "Evicted mount go-mod: 2 snapshots deleted, 2 blobs (3.0\xa0KB) freed" in page
    assert "No snapshot stored." in page
    assert not Blob.objects.exists()
