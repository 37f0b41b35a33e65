"""Slow clients against the service as `bin/run` starts it: opens many stalled
connections (half a request head; a head and half a chunked body; half a blob PUT),
then measures GET /magicache/config latency while they hang.

    python bench/slow_clients_bench.py [--stalled 300] [--calls 200]
    python bench/slow_clients_bench.py --url http://127.0.0.1:8080 --token TOKEN

Loopback only. Prints a JSON report: /config p50/p99/max with and without the stalled
connections, and how many of them the server had closed by the end (refused ones close
at once; stalled heads after CACHEWEB_CLIENT_TIMEOUT). Figures: docs/bench-slow-clients.md.
"""

import argparse
import base64
import json
import os
import socket
import statistics
import sys
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


def measure(host, port, token, calls):
    samples = sorted(config_latency(host, port, token) for _ in range(calls))
    return {
        "p50_ms": round(statistics.median(samples) * 1000, 1),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000, 1),
        "max_ms": round(samples[-1] * 1000, 1),
    }


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
    parser.add_argument("--stalled", type=int, default=300, help="stalled connections per kind (at most 2000)")
    parser.add_argument("--calls", type=int, default=200, help="/config calls per measurement")
    args = parser.parse_args(argv)
    if bool(args.url) != bool(args.token):
        parser.error("give --url and --token together")
    args.stalled = min(args.stalled, 2000)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cacheweb.settings")

    service = None
    url, token = args.url, args.token
    if not url:
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
    report = {"stalled_per_kind": args.stalled}
    sockets = {}
    try:
        report["idle"] = measure(host, port, token, args.calls)
        for kind, payload in stalled_payloads(host, port).items():
            sockets[kind] = []
            for _ in range(args.stalled):
                sock = socket.create_connection((host, port), timeout=30)
                sock.sendall(payload)
                sockets[kind].append(sock)
        report["stalled"] = measure(host, port, token, args.calls)
        report["closed_by_server"] = {kind: sum(closed(s) for s in socks) for kind, socks in sockets.items()}
    finally:
        for socks in sockets.values():
            for sock in socks:
                sock.close()
        if service:
            service.stop()
            row.revoke()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
