"""Slow clients against the service as `bin/run` starts it: opens many stalled
connections (half a request head; a head and half a chunked body; half a blob PUT, in
equal shares), then measures, while they hang, what engines do: GET /magicache/config
latency, and uploads and downloads of a 100 MB blob through the built-in blob URLs (with
/config latency sampled during the transfers). The same measurements without the
stalled connections, in the same run against the same server, are the peer: the report
gives each figure with stalled connections as a ratio to it.

    python bench/slow_clients_bench.py [--stalled 500] [--calls 200] [--blob-mib 100] [--blob-rounds 3]
    DATABASE_URL=postgres://... python bench/slow_clients_bench.py    # on PostgreSQL
    python bench/slow_clients_bench.py --url http://127.0.0.1:8080 --token TOKEN

Loopback only. Prints a JSON report: the database, commit, load average, /config
p50/p99/max and blob MB/s with and without the stalled connections and their ratios,
and how many stalled connections the server had closed by the end (refused ones close at
once; stalled heads after CACHEWEB_CLIENT_TIMEOUT). Figures: docs/bench-slow-clients.md.
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def stalled_payloads(host, port):
    h = f"Host: {host}:{port}\r\n"
    return {
        "half-head": f"GET /magicache/config HTTP/1.1\r\n{h}Authorization: Ba".encode(),
        "half-chunked-body": (
            f"GET /magicache/config HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n"
            "Content-Type: application/json\r\n\r\n1000\r\n{\"Eng"
        ).encode(),
        "half-blob-put": (
            f"PUT /blobs/1/sha256:{'a' * 64}?expires=9999999999&sig=00 HTTP/1.1\r\n{h}"
            "Content-Length: 100000000\r\n\r\n"
        ).encode() + b"x" * 4096,
    }


def config_latency(host, port, token):
    body = b'{"EngineID":"bench-engine"}\n'
    auth = base64.b64encode(f"{token}:".encode()).decode()
    request = (
        f"GET /magicache/config HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Basic {auth}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=120) as sock:
        sock.sendall(request)
        reply = b""
        while part := sock.recv(65536):
            reply += part
    if not reply.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"/config failed: {reply[:200]!r}")
    return time.monotonic() - started


def summary(samples):
    samples = sorted(samples)
    return {
        "calls": len(samples),
        "p50_ms": round(statistics.median(samples) * 1000, 1),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000, 1),
        "max_ms": round(samples[-1] * 1000, 1),
    }


def measure(host, port, token, calls):
    return summary(config_latency(host, port, token) for _ in range(calls))


def engine_call(host, port, token, endpoint, body):
    auth = base64.b64encode(f"{token}:".encode()).decode()
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        conn.request("GET", f"/magicache/{endpoint}", body=json.dumps(body).encode(),
                     headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
        reply = conn.getresponse()
        data = reply.read()
    finally:
        conn.close()
    if reply.status != 200:
        raise RuntimeError(f"/{endpoint} answered {reply.status}: {data[:200]!r}")
    return json.loads(data)


def make_blob(path, size):
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return "sha256:" + digest.hexdigest()


def curl(args):
    """(status, seconds) of one transfer; curl moves the bytes, as in bench/blob_bench.py."""
    done = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", *args],
                          capture_output=True, text=True, check=True, timeout=600)
    status, seconds = done.stdout.split()
    return int(status), float(seconds)


class Blobs:
    """One blob uploaded and downloaded as an engine does: ask the engine endpoint for a
    URL, then PUT or GET it. Re-PUTting the same signed URL repeats the whole verified
    write (hash, fsync, rename), so each round does the same work."""

    def __init__(self, host, port, token, path, size):
        self.host, self.port, self.token, self.path, self.size = host, port, token, path, size
        self.digest = make_blob(path, size)
        self.upload_url = engine_call(host, port, token, "layerUploadURL", {"Digest": self.digest})["URL"]

    def upload(self):
        status, seconds = curl(["-T", str(self.path), self.upload_url])
        if status not in (200, 201, 204):
            raise RuntimeError(f"blob PUT answered {status}")
        return self.size / seconds / 1e6

    def download(self):
        url = engine_call(self.host, self.port, self.token, "layerDownloadURL", {"Digest": self.digest})["URL"]
        status, seconds = curl([url])
        if status != 200:
            raise RuntimeError(f"blob GET answered {status}")
        return self.size / seconds / 1e6


def transfers(host, port, token, blobs, rounds):
    """Median upload and download MB/s over `rounds`, and /config latency sampled by a
    second client all the while (one call after another)."""
    results = {"upload": [], "download": []}
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(config_latency(host, port, token))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for _ in range(rounds):
            results["upload"].append(blobs.upload())
            results["download"].append(blobs.download())
    finally:
        stop.set()
        sampler.join()
    return {
        "upload_mb_s": round(statistics.median(results["upload"]), 1),
        "download_mb_s": round(statistics.median(results["download"]), 1),
        "all_mb_s": {k: [round(v, 1) for v in vs] for k, vs in results.items()},
        "config_during_transfers": summary(samples),
    }


def phase(host, port, token, calls, blobs, rounds):
    return {"config": measure(host, port, token, calls), "blobs": transfers(host, port, token, blobs, rounds)}


def ratios(idle, stalled):
    """Each figure with stalled connections open over the same figure without them."""
    return {
        "config_p50": round(stalled["config"]["p50_ms"] / idle["config"]["p50_ms"], 2),
        "config_p99": round(stalled["config"]["p99_ms"] / idle["config"]["p99_ms"], 2),
        "upload_mb_s": round(stalled["blobs"]["upload_mb_s"] / idle["blobs"]["upload_mb_s"], 2),
        "download_mb_s": round(stalled["blobs"]["download_mb_s"] / idle["blobs"]["download_mb_s"], 2),
        "config_p99_during_transfers": round(
            stalled["blobs"]["config_during_transfers"]["p99_ms"] / idle["blobs"]["config_during_transfers"]["p99_ms"], 2
        ),
    }


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def closed(sock):
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
        return data == b"" or data.startswith(b"HTTP/")
    except BlockingIOError:
        return False
    except OSError:
        return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of a running service on this machine")
    parser.add_argument("--token", help="engine token for --url")
    parser.add_argument("--stalled", type=int, default=500,
                        help="stalled connections in all, shared equally by the three kinds (at most 6000)")
    parser.add_argument("--calls", type=int, default=200, help="/config calls per measurement")
    parser.add_argument("--blob-mib", type=float, default=100 / 1.048576, help="blob size (MiB; 100 MB by default)")
    parser.add_argument("--blob-rounds", type=int, default=3, help="uploads and downloads per measurement")
    args = parser.parse_args(argv)
    if bool(args.url) != bool(args.token):
        parser.error("give --url and --token together")
    args.stalled = min(args.stalled, 6000)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cacheweb.settings")

    service = None
    url, token = args.url, args.token
    own_data_dir = None
    if not url:
        # Embedded defaults in a data directory of the run's own; stalled heads held for
        # the whole measurement (the server closes them after CACHEWEB_CLIENT_TIMEOUT).
        if "CACHEWEB_DATA_DIR" not in os.environ:
            own_data_dir = tempfile.mkdtemp(prefix="slow-clients-data-")
            os.environ["CACHEWEB_DATA_DIR"] = own_data_dir
        os.environ.setdefault("CACHEWEB_CLIENT_TIMEOUT", "600")
        import django

        django.setup()
        from django.core.management import call_command

        from accounts.models import EngineToken, Organization
        from enginesim.localservice import LocalService

        call_command("migrate", interactive=False, verbosity=0)
        row, token = EngineToken.issue(Organization.ensure("bench"), label="slow_clients_bench (revoked when done)")
        service = LocalService(worker=False)
        url = service.url
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in LOOPBACK:
        parser.error("loopback URLs only")
    host, port = parts.hostname, parts.port or 80
    database = None
    if not args.url:
        from django.db import connection

        database = connection.vendor
    payloads = stalled_payloads(host, port)
    shares = {kind: args.stalled // len(payloads) + (i < args.stalled % len(payloads)) for i, kind in enumerate(payloads)}
    report = {
        "commit": commit(), "database": database, "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "client_timeout_s": os.environ.get("CACHEWEB_CLIENT_TIMEOUT"),
        "stalled": sum(shares.values()), "stalled_per_kind": shares,
        "blob_bytes": int(args.blob_mib * 1024 * 1024), "blob_rounds": args.blob_rounds,
    }
    sockets = {}
    work = tempfile.mkdtemp(prefix="slow-clients-bench-")
    try:
        blobs = Blobs(host, port, token, Path(work) / "blob", report["blob_bytes"])
        # Warm up (first page-cache fill, first requests of each thread) outside the figures.
        blobs.upload()
        blobs.download()
        report["idle"] = phase(host, port, token, args.calls, blobs, args.blob_rounds)
        for kind, payload in payloads.items():
            sockets[kind] = []
            for _ in range(shares[kind]):
                sock = socket.create_connection((host, port), timeout=30)
                sock.sendall(payload)
                sockets[kind].append(sock)
        opened = time.monotonic()
        report["with_stalled"] = phase(host, port, token, args.calls, blobs, args.blob_rounds)
        report["seconds_measured_with_stalled"] = round(time.monotonic() - opened, 1)
        report["closed_by_server"] = {kind: sum(closed(s) for s in socks) for kind, socks in sockets.items()}
        report["ratio_stalled_to_idle"] = ratios(report["idle"], report["with_stalled"])
        report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        for socks in sockets.values():
            for sock in socks:
                sock.close()
        if service:
            service.stop()
            row.revoke()
        shutil.rmtree(work, ignore_errors=True)
        if own_data_dir:
            shutil.rmtree(own_data_dir, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
