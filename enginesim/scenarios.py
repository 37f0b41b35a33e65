"""Runs of several simulated engines against one service, and what they prove.

`pair`: engines one after another. Engine 0 builds two projects and exports; each later
engine builds all earlier work again (every key of it must be a hit), plus work nobody
built: the same project on another base image, whose keys share every link digest with
work that was exported and differ only by what they link from (any hit there is wrong),
and a project of its own. Cache mounts go up from each engine and come down in the next.

`fleet`: N engines at once for R rounds. In each round every engine imports (and checks),
builds, and exports; rounds are separated by a barrier so each import can expect all the
previous rounds' exports. Every engine builds a shared project (whose source changes every
round) and one of its own.
"""

import random
import threading
import time
from dataclasses import dataclass

from enginesim.engine import Ledger, SimEngine
from enginesim.graph import BASES, PROJECTS, Workload, project
from enginesim.report import RunReport
from enginesim.wire import CallLog

SCENARIOS = ("pair", "fleet")
OFFSETS = (0, -180, 120, 330)  # minutes: engines log times in their own zones
MOUNTS = ("go-mod", "pnpm-store-v2")


@dataclass
class RunOptions:
    url: str
    token: str
    scenario: str = "pair"
    engines: int = 2
    rounds: int = 1
    seed: int = 0
    scale: int = 64 * 1024  # bytes of content in a typical layer
    mounts: bool = True
    download_limit: int | None = None
    settle_seconds: float = 15.0  # how long a later engine waits for earlier exports to show
    time_limit: float = 600.0
    # Old builds already in each fleet engine's key store: posted on every /records, as a
    # busy engine posts tens of thousands of mostly unchanged keys every period.
    history: int = 0
    max_requests: int | None = None
    # Several front ends of one service (scaled out): engine i talks to urls[i % len(urls)].
    # Empty: every engine uses `url`.
    urls: tuple[str, ...] = ()


def run(options: RunOptions) -> RunReport:
    if options.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {options.scenario!r}; choose from {', '.join(SCENARIOS)}")
    log = CallLog(budget=options.max_requests)
    ledger = Ledger()
    started = time.monotonic()
    engines = [_engine(options, i, log, ledger) for i in range(options.engines)]
    misses, failures = [], []
    try:
        if options.scenario == "pair":
            _pair(options, engines, misses)
        else:
            _fleet(options, engines, failures)
    finally:
        for engine in engines:
            engine.close()
    return RunReport.collect(options, engines, log, time.monotonic() - started, misses, failures)


def _engine(options, index, log, ledger):
    rng = random.Random(f"{options.seed}/{index}")
    name = f"enginesim-{options.seed}-{index}-{rng.getrandbits(32):08x}"
    return SimEngine(
        name, options.urls[index % len(options.urls)] if options.urls else options.url,
        options.token, log, ledger, seed=rng.getrandbits(64),
        mounts=MOUNTS[: 1 + index % 2] if options.mounts else (),
        prune_every=7, download_limit=options.download_limit,
        offset_minutes=OFFSETS[index % len(OFFSETS)],
        clock_ns=1_719_940_563_000_000_000 + index * 3_600 * 10**9,
        resultless_every=9, double_every=7,
    )


def _tag(options):
    # Separate runs with different seeds build different sources, so their work is distinct.
    return f"s{options.seed}"


def pair_workloads(options, index):
    """(work to check as hits, work nobody built) for engine `index` of a pair run."""
    s = options.scale
    tag = _tag(options)
    own = project(f"{PROJECTS[index % len(PROJECTS)]}-{tag}", BASES[index % 2], 0, s)
    earlier = []
    for j in range(index):
        earlier += project(f"{PROJECTS[j % len(PROJECTS)]}-{tag}", BASES[j % 2], 0, s)
    shared = project(f"shared-{tag}", BASES[2], 0, s)
    if index == 0:
        return [], own + shared
    earlier += shared
    # The trap: engine 0's project (same sources) on a base image nobody used before. Its
    # keys share every link digest with exported work and differ only in what they link from.
    trap = project(f"{PROJECTS[0]}-{tag}", f"golang:1.21.{index}-bookworm", 0, s)
    return earlier, own + trap


def _pair(options, engines, misses):
    for index, engine in enumerate(engines):
        if not engine.start():
            continue
        known, fresh = pair_workloads(options, index)
        targets = known + fresh
        workload = Workload.of(targets)
        deadline = time.monotonic() + (options.settle_seconds if index else 0)
        first = True
        while True:
            # A periodic export can come before the first build: CacheKeys and Links are null.
            check = engine.import_and_check(workload, before_build=engine.export if first else None)
            first = False
            # A service may apply exports in the background: give them time to show, but
            # never wait on a wrong hit or a broken config.
            if check is None or not check.misses or check.wrong_hits or check.violations \
                    or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if check is not None:
            engine.absorb(check)
        if index:
            misses += _expect_mounts(engine, deadline)
        engine.export()
        engine.sync_mounts_up()


def _expect_mounts(engine, deadline):
    """Each mount an earlier engine uploaded must come down with those exact files. A
    service may confirm uploads in the background (S3): until the deadline, ask again, as
    an engine starting that much later would."""
    misses = []
    with engine.ledger.lock:
        uploaded = dict(engine.ledger.mounts)

    def missing():
        return [n for n in engine.mount_names if n in uploaded and engine.mount_files.get(n) != uploaded[n][1]]

    while missing() and time.monotonic() < deadline:
        time.sleep(0.5)
        engine.sync_mounts_down()
    for name in engine.mount_names:
        if name in uploaded and engine.mount_files.get(name) != uploaded[name][1]:
            misses.append(f"{engine.name}: cache mount {name} was not synced down after it was uploaded")
    return misses


def fleet_workload(options, index, round_no):
    s = options.scale
    tag = _tag(options)
    shared = project(f"shared-{tag}", BASES[0], round_no, s)
    own = project(f"{PROJECTS[index % len(PROJECTS)]}-{tag}-{index}", BASES[index % len(BASES)], round_no // 2, s)
    return Workload.of(shared + own)


def history_workload(options, index):
    targets = []
    for h in range(options.history):
        targets += project(f"old-{_tag(options)}-{index}-{h}", BASES[h % len(BASES)], 0, 1024)
    return Workload.of(targets)


def _fleet(options, engines, errors):
    barrier = threading.Barrier(len(engines))
    deadline = time.monotonic() + options.time_limit

    def drive(index, engine):
        try:
            started = engine.start()
            if options.history:
                engine.keys.run(history_workload(options, index))
            for round_no in range(options.rounds):
                if started and time.monotonic() < deadline:
                    workload = fleet_workload(options, index, round_no)
                    check = engine.import_and_check(workload)
                    if check is not None:
                        engine.absorb(check)
                    engine.export()
                barrier.wait(timeout=options.time_limit)
            if started:
                engine.sync_mounts_up()
        except threading.BrokenBarrierError:
            errors.append(f"{engine.name}: another engine stopped; round barrier broken")
        except Exception as exc:  # a crash in one engine must not hang the others
            errors.append(f"{engine.name}: simulator crashed: {exc!r}")
            barrier.abort()

    threads = [threading.Thread(target=drive, args=(i, e), name=e.name) for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
