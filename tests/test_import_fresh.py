"""/import while another process builds: fresh, one build per burst, a bounded wait."""

import logging
import threading
import time

import pytest
from django.db import connections
from django.db.models import F
from django.utils import timezone

from records import importconfig
from records.models import ImportSnapshot
from records.tasks import rebuild_import
from tests.buildkit_oracle import get_import, key, result, root_key, sha
from tests.test_import import IMAGE, export


class HeldBuild:
    """importconfig.render, counted; the first call says `started` and waits for `go`."""

    def __init__(self, monkeypatch):
        self.real = importconfig.render
        self.calls = 0
        self.started = threading.Event()
        self.go = threading.Event()
        monkeypatch.setattr(importconfig, "render", self)

    def __call__(self, organization):
        self.calls += 1
        if self.calls == 1:
            self.started.set()
            assert self.go.wait(30)
        return self.real(organization)


def in_thread(fn, *args):
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def joined(thread, out):
    thread.join(30)
    assert not thread.is_alive()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def image(n):
    return key(root_key(sha(f"docker-image://{n}")), result(f"r{n}"))


def results_in(config):
    return sorted(layer["blob"] for layer in config["layers"])


def test_an_import_after_layers_has_the_result_while_another_build_runs(transactional_db, client, org, token, monkeypatch):
    export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["base"]})
    get_import(client, token)
    export(client, org, token, [image(1)], [], {"r1": ["one"]})
    build = HeldBuild(monkeypatch)
    worker = in_thread(rebuild_import, org.pk)  # the worker, building the change above
    assert build.started.wait(30)

    # Changes committed while it builds: their tasks find the build in progress and
    # build nothing themselves.
    export(client, org, token, [image(2)], [], {"r2": ["two"]})
    rebuild_import(org.pk)
    assert build.calls == 1

    waiting = threading.Event()
    real_wait = importconfig._wait

    def watched_wait(seconds):
        waiting.set()
        real_wait(seconds)

    monkeypatch.setattr(importconfig, "_wait", watched_wait)
    engine = in_thread(get_import, client, token)
    assert waiting.wait(30)  # the import waits for that build rather than serve the old body
    build.go.set()
    joined(*worker)
    config = joined(*engine)
    assert results_in(config) == sorted([sha("base"), sha("one"), sha("two")])
    # The worker's build, then one more for both changes made meanwhile (by the worker's
    # next round or by the waiting import, whichever claimed first).
    assert build.calls == 2
    snapshot = ImportSnapshot.objects.get(organization=org)
    assert snapshot.current and snapshot.building_since is None


def test_changes_during_a_build_are_folded_into_one_more(transactional_db, client, org, token, monkeypatch):
    export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["base"]})
    build = HeldBuild(monkeypatch)
    worker = in_thread(rebuild_import, org.pk)
    assert build.started.wait(30)
    for n in range(3):
        export(client, org, token, [image(n)], [], {f"r{n}": [f"layer {n}"]})
        rebuild_import(org.pk)  # each change's own task: nothing, a build is in progress
    assert build.calls == 1
    build.go.set()
    joined(*worker)
    assert build.calls == 2
    snapshot = ImportSnapshot.objects.get(organization=org)
    assert snapshot.current and snapshot.record_count == 4 and snapshot.building_since is None
    calls = build.calls
    assert len(get_import(client, token)["records"]) == 4
    rebuild_import(org.pk)
    assert build.calls == calls  # served as stored, nothing rebuilt


def test_the_wait_is_bounded_and_serves_the_last_good_body(client, org, token, settings, caplog):
    settings.IMPORT_WAIT = 0.05
    export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["base"]})
    first = get_import(client, token)
    export(client, org, token, [image(1)], [], {"r1": ["one"]})
    # A builder holds the claim and never finishes within the bound.
    ImportSnapshot.objects.filter(organization=org).update(building_since=timezone.now())
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="cacheweb.records"):
        assert get_import(client, token) == first
    assert time.monotonic() - started >= settings.IMPORT_WAIT
    assert "not built within CACHEWEB_IMPORT_WAIT" in caplog.text
    # Once the claim is given up, the next import builds the change.
    ImportSnapshot.objects.filter(organization=org).update(building_since=None)
    assert results_in(get_import(client, token)) == sorted([sha("base"), sha("one")])


def test_a_builder_that_keeps_being_overtaken_queues_the_rest(client, org, token, monkeypatch):
    """Changes arriving faster than builds: the builder stops after REBUILD_ROUNDS and
    queues a task for the rest instead of holding a worker."""
    export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["base"]})
    real = importconfig.render
    calls = []

    def overtaken(organization):
        calls.append(1)
        ImportSnapshot.objects.filter(organization=organization).update(generation=F("generation") + 1)
        return real(organization)

    queued = []
    monkeypatch.setattr(importconfig, "render", overtaken)
    monkeypatch.setattr(importconfig.outbox, "enqueue", lambda task, args: queued.append((task.name, args)))
    assert importconfig.rebuild(org) is not None
    assert len(calls) == importconfig.REBUILD_ROUNDS
    assert queued == [("records.tasks.rebuild_import", [org.pk])]
    assert ImportSnapshot.objects.get(organization=org).building_since is None


def test_the_build_checks_what_check_config_checks(client, org, token):
    """render no longer runs check_config: the build refuses the same rows by itself."""
    from records.models import Layer, Record, RecordInput
    from tests.buildkit_oracle import link, random_key_id
    from tests.test_import import EXEC

    k = random_key_id()
    export(client, org, token, [key(IMAGE, result("img")), key(k, result("e"))],
           [link(k, IMAGE, 0, EXEC)], {"img": ["a"], "e": ["a", "b"]})
    config = importconfig.build_config(org)
    importconfig.check_config(config)
    assert len(config["records"]) == 2 and len(config["layers"]) == 2

    Layer.objects.filter(organization=org, digest=sha("b")).update(diff_id="")
    with pytest.raises(importconfig.InvalidConfig, match="diffID"):
        importconfig.build_config(org)
    Layer.objects.filter(organization=org, digest=sha("b")).update(diff_id=sha("diff"))
    image, execution = Record.objects.get(digest=IMAGE), Record.objects.get(digest=EXEC)
    RecordInput.objects.filter(record=execution).delete()
    with pytest.raises(importconfig.InvalidConfig, match="without alternatives"):
        importconfig.build_config(org)
    RecordInput.objects.create(organization=org, record=execution, index=0, selector="", source=image)
    RecordInput.objects.create(organization=org, record=image, index=0, selector="", source=execution)
    Record.objects.filter(pk=image.pk).update(input_count=1)
    with pytest.raises(importconfig.InvalidConfig, match="loop"):
        importconfig.build_config(org)
    Record.objects.filter(pk=image.pk).update(input_count=0, digest="random:" + "0" * 64)
    RecordInput.objects.filter(record=image).delete()
    with pytest.raises(importconfig.InvalidConfig, match="random"):
        importconfig.build_config(org)
