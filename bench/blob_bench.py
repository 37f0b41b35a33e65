#!/usr/bin/env python3
"""Blob transfer benchmark: cacheweb's built-in storage against nginx and docker-registry.

One blob (1 GiB by default) is uploaded and downloaded on loopback, with curl as the
client for every server, a few rounds each, side by side in one run:

- cacheweb, started as `bin/run` starts it (manage.py bootstrap, then manage.py serve:
  gunicorn + Celery), embedded defaults in a temporary data dir: the engine asks
  /magicache/layerUploadURL, PUTs to the signed URL (streamed to disk while SHA-256 is
  checked, fsynced, renamed into place), asks /magicache/layerDownloadURL and GETs
  (sendfile); and the same with CACHEWEB_BLOB_FSYNC=0 (no fsync, like nginx and the
  registry); and the same as shipped but with gunicorn's stock gthread worker instead of
  cacheweb's own (cacheweb/gworker.py HeadFirstWorker), through GUNICORN_CMD_ARGS, so
  that what the worker class costs or gains is measured side by side;
- nginx (Debian's): `sendfile on`, WebDAV `PUT` for uploads, plain GET for downloads;
- docker-registry (Debian's distribution 2.8): a monolithic blob upload
  (POST /v2/<name>/blobs/uploads/, then PUT ?digest=), pulled back with
  GET /v2/<name>/blobs/<digest>.

It prints MB/s per server and direction, ratios to nginx and docker-registry, and the
peak memory of cacheweb's web processes (gunicorn master and workers) during transfers,
as summed RSS and as PSS, and the PSS of everything `manage.py serve` runs.

    apt-get install -y nginx docker-registry curl
    .venv/bin/python bench/blob_bench.py [--size-mib 1024] [--rounds 3] [--baseline ../main]

With --baseline CHECKOUT, cacheweb is also run from another checkout of the code (with
this checkout's .venv) in the same rounds, and the ratio of the two is printed.
"""

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=60, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def make_blob(path, size):
    """Write `size` bytes that do not compress or repeat (each MiB stamped with its
    index), returning the sha256 digest. Streams: never more than a MiB in memory."""
    base = hashlib.shake_256(b"cacheweb-bench").digest(MIB)
    hasher = hashlib.sha256()
    with open(path, "wb") as out:
        written, index = 0, 0
        while written < size:
            block = (index.to_bytes(8, "big") + base[8:])[: size - written]
            out.write(block)
            hasher.update(block)
            written += len(block)
            index += 1
    return "sha256:" + hasher.hexdigest()


def curl(args):
    """Run curl; returns (http status, seconds)."""
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", *args],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return int(out[0]), float(out[1])


def curl_json(args):
    out = subprocess.run(["curl", "-sS", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


class RssSampler:
    """Peak memory of a process and its children, sampled every 20 ms: summed RSS, and
    summed PSS (proportional set size), which counts pages shared between the gunicorn
    master and its forked workers once instead of once per process."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0
        self.peak_pss = 0
        self.peak_single = 0
        self._stop = threading.Event()
        self._thread = None

    def pids(self):
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        return found

    @staticmethod
    def _kib_field(path, name):
        """A `Name:   N kB` line of a /proc file, in bytes; 0 once the process is gone."""
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(name):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def rss(self, pid):
        return self._kib_field(f"/proc/{pid}/status", "VmRSS:")

    def pss(self, pid):
        return self._kib_field(f"/proc/{pid}/smaps_rollup", "Pss:")

    def sample(self):
        pids = self.pids()
        values = [self.rss(pid) for pid in pids]
        self.peak = max(self.peak, sum(values))
        self.peak_pss = max(self.peak_pss, sum(self.pss(pid) for pid in pids))
        self.peak_single = max([self.peak_single, *values])

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.02)

    def __enter__(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class Server:
    name = ""
    proc = None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Cacheweb(Server):
    name = "cacheweb"

    def __init__(self, work, extra_env=None, root=ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        for key in [k for k in env if k.startswith("CACHEWEB_") or k in ("DATABASE_URL", "CELERY_BROKER_URL")]:
            del env[key]
        env.update({
            "CACHEWEB_DATA_DIR": str(work / "cacheweb"),
            "CACHEWEB_BIND": f"127.0.0.1:{self.port}",
            "DJANGO_SETTINGS_MODULE": "cacheweb.settings",
            **(extra_env or {}),
        })
        # This checkout's Python (its .venv), another checkout's code (`--baseline`).
        python = str(ROOT / ".venv" / "bin" / "python")
        boot = subprocess.run([python, "manage.py", "bootstrap"], cwd=root, env=env,
                              check=True, capture_output=True, text=True).stdout
        self.token = re.search(r"CACHESERVICE_TOKEN=(\S+)", boot).group(1)
        self.log = open(work / "cacheweb.log", "wb")
        self.proc = subprocess.Popen([python, "manage.py", "serve"], cwd=root, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(self.url + "/healthz", proc=self.proc)
        self.log.flush()
        used = re.search(r"Using worker: (\S+)", (work / "cacheweb.log").read_text(errors="replace"))
        self.worker_class = used.group(1) if used else None

    def web_pid(self):
        """gunicorn's master: the child of `serve` whose command line names gunicorn."""
        for child in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split():
            if b"gunicorn" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
        raise RuntimeError("no gunicorn under manage.py serve")

    def engine(self, endpoint, digest):
        return curl_json(["-X", "GET", "-u", f"{self.token}:", "-H", "Content-Type: application/json",
                          "--data-binary", json.dumps({"Digest": digest}), f"{self.url}/magicache/{endpoint}"])

    def prepare(self, digest):
        answer = self.engine("layerUploadURL", digest)
        self.upload_url = answer["URL"]
        self.upload_headers = [h for k, v in answer["Headers"].items() for h in ("-H", f"{k}: {v}")]

    def upload(self, path, digest):
        # Re-PUTting the same URL does the whole verified write again: same work each round.
        return curl(["-T", str(path), *self.upload_headers, self.upload_url])

    def download(self, digest):
        url = self.engine("layerDownloadURL", digest)["URL"]
        return curl([url])


NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port};
        root {work}/nginx-www;
        client_max_body_size 0;
        location / {{
            dav_methods PUT;
            create_full_put_path on;
        }}
    }}
}}
"""


class Nginx(Server):
    name = "nginx"

    def __init__(self, work):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (work / "nginx-www").mkdir()
        (work / "nginx-body").mkdir()
        conf = work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(work=work, port=self.port))
        user = ["-g", "user root;"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), *user], start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(self.url + "/", proc=self.proc)

    def prepare(self, digest):
        pass

    def upload(self, path, digest):
        return curl(["-T", str(path), f"{self.url}/blobs/{digest.split(':')[1]}"])

    def download(self, digest):
        return curl([f"{self.url}/blobs/{digest.split(':')[1]}"])


REGISTRY_CONF = """version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {work}/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


class Registry(Server):
    name = "docker-registry"

    def __init__(self, work):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = work / "registry.yml"
        conf.write_text(REGISTRY_CONF.format(work=work, port=self.port))
        self.proc = subprocess.Popen(["docker-registry", "serve", str(conf)], start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(self.url + "/v2/", proc=self.proc)

    def prepare(self, digest):
        pass

    def upload(self, path, digest):
        # A monolithic upload, as buildkit's registry cache pushes a layer.
        out = subprocess.run(
            ["curl", "-sS", "-D", "-", "-o", "/dev/null", "-X", "POST", f"{self.url}/v2/bench/cache/blobs/uploads/"],
            check=True, capture_output=True, text=True).stdout
        location = re.search(r"(?im)^location:\s*(\S+)", out).group(1)
        location = urllib.parse.urljoin(self.url, location)
        sep = "&" if "?" in location else "?"
        return curl(["-T", str(path), "-H", "Content-Type: application/octet-stream",
                     f"{location}{sep}digest={urllib.parse.quote(digest)}"])

    def download(self, digest):
        return curl(["-L", f"{self.url}/v2/bench/cache/blobs/{digest}"])


def run_round(server, path, digest, size, samplers, results):
    for direction in ("upload", "download"):
        # Start every transfer with no dirty pages: otherwise whoever comes next pays for
        # writing back the gigabyte the previous server left in the page cache.
        os.sync()
        for sampler in samplers:
            sampler.__enter__()
        try:
            status, seconds = server.upload(path, digest) if direction == "upload" else server.download(digest)
        finally:
            for sampler in samplers:
                sampler.__exit__()
        if status not in (200, 201, 204):
            raise RuntimeError(f"{server.name} {direction} answered {status}")
        results[direction].append(size / seconds / 1e6)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1, help="seed of the order of servers in each round")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="also run cacheweb from this checkout (e.g. a worktree of main), fsync on, "
                             "in the same rounds: before and after side by side")
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "manage.py").is_file():
        sys.exit(f"--baseline {args.baseline}: no manage.py there")
    for tool in ("nginx", "docker-registry", "curl"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y nginx docker-registry curl")

    load_before = [round(x, 2) for x in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="cacheweb-bench-"))
    size = args.size_mib * MIB
    servers = []
    try:
        blob = work / "blob"
        digest = make_blob(blob, size)
        memory = {}
        variants = [
            ("cacheweb", lambda: Cacheweb(work)),
            ("cacheweb (fsync off)", lambda: Cacheweb(work / "nofsync", {"CACHEWEB_BLOB_FSYNC": "0"})),
            ("cacheweb (gthread)", lambda: Cacheweb(work / "gthread", {"GUNICORN_CMD_ARGS": "--worker-class gthread"})),
            ("nginx", lambda: Nginx(work)),
            ("docker-registry", lambda: Registry(work)),
        ]
        if args.baseline is not None:
            variants.insert(1, ("cacheweb (baseline)", lambda: Cacheweb(work / "baseline", root=args.baseline.resolve())))
            (work / "baseline").mkdir()
        (work / "nofsync").mkdir()
        (work / "gthread").mkdir()
        samplers = {}
        worker_classes = {}
        for name, start in variants:
            server = start()
            servers.append((name, server))
            server.prepare(digest)
            if isinstance(server, Cacheweb):
                worker_classes[name] = server.worker_class
                # The web tier moves the bytes; the whole service adds Celery's processes.
                samplers[name] = [RssSampler(server.web_pid()), RssSampler(server.proc.pid)]
                for sampler in samplers[name]:
                    sampler.sample()
                memory[name] = {"before_mb": samplers[name][0].peak / 1e6,
                                "service_before_pss_mb": samplers[name][1].peak_pss / 1e6}
        runs = {name: {"upload": [], "download": []} for name, _ in variants}
        # Every server once per round, so that all see the same background (disk
        # writeback, other processes) within a round, in a new order each round so that
        # none always follows the same one. Medians over rounds.
        order = random.Random(args.seed)
        for _ in range(args.rounds):
            for name, server in order.sample(servers, len(servers)):
                run_round(server, blob, digest, size, [], runs[name])
        # Memory is sampled in rounds of its own, not timed: reading /proc every 20 ms
        # costs CPU that only cacheweb's timings would pay.
        for name, server in servers:
            if name in samplers:
                run_round(server, blob, digest, size, samplers[name], {"upload": [], "download": []})
        for name, (web, service) in samplers.items():
            memory[name].update(peak_total_mb=web.peak / 1e6, peak_pss_mb=web.peak_pss / 1e6,
                                peak_process_mb=web.peak_single / 1e6,
                                service_peak_pss_mb=service.peak_pss / 1e6)
        results = {name: {d: statistics.median(v) for d, v in r.items()} | {"all": r} for name, r in runs.items()}
    finally:
        for _, server in servers:
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    report = {"size_bytes": size, "rounds": args.rounds, "cpus": os.cpu_count(), "mb_per_s": results,
              "cacheweb_web_memory": memory, "worker_classes": worker_classes,
              "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip()}
    ratios = {}
    for name in ("cacheweb", "cacheweb (baseline)", "cacheweb (fsync off)"):
        if name not in results:
            continue
        for direction in ("upload", "download"):
            ours = results[name][direction]
            ratios[f"{name} {direction}"] = {
                "vs nginx": ours / results["nginx"][direction],
                "vs docker-registry": ours / results["docker-registry"][direction],
            }
    report["ratios"] = ratios
    report["head_first_vs_gthread"] = {
        direction: results["cacheweb"][direction] / results["cacheweb (gthread)"][direction]
        for direction in ("upload", "download")
    }
    if args.baseline is not None:
        report["baseline"] = {
            "checkout": str(args.baseline),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.baseline,
                                     capture_output=True, text=True).stdout.strip(),
            "cacheweb vs baseline": {d: results["cacheweb"][d] / results["cacheweb (baseline)"][d]
                                     for d in ("upload", "download")},
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"blob: {size / MIB:.0f} MiB, {args.rounds} rounds (median), loopback, {os.cpu_count()} CPUs, client curl")
    print(f"{'server':24} {'upload MB/s':>12} {'download MB/s':>14}")
    for name, r in results.items():
        print(f"{name:24} {r['upload']:12.0f} {r['download']:14.0f}")
    print()
    for key, r in ratios.items():
        print(f"{key:34} {r['vs nginx']:5.2f}x nginx   {r['vs docker-registry']:5.2f}x docker-registry")
    print(f"{'cacheweb vs cacheweb (gthread)':34} upload {report['head_first_vs_gthread']['upload']:5.2f}x   "
          f"download {report['head_first_vs_gthread']['download']:5.2f}x")
    if args.baseline is not None:
        b = report["baseline"]
        print(f"{'cacheweb vs baseline ' + b['commit']:34} upload {b['cacheweb vs baseline']['upload']:5.2f}x   "
              f"download {b['cacheweb vs baseline']['download']:5.2f}x")
    print(f"worker classes: {worker_classes}; commit {report['commit']}; load average before "
          f"{report['load_average_before']}, after {report['load_average_after']}")
    print()
    for name, m in memory.items():
        print(f"{name}: gunicorn RSS before {m['before_mb']:.0f} MB; peak during transfers "
              f"{m['peak_total_mb']:.0f} MB RSS / {m['peak_pss_mb']:.0f} MB PSS (master + workers), "
              f"{m['peak_process_mb']:.0f} MB (one process); whole service (web, Celery worker and "
              f"scheduler) {m['service_before_pss_mb']:.0f} MB PSS before, {m['service_peak_pss_mb']:.0f} MB peak")


if __name__ == "__main__":
    main()
