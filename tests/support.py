"""Helpers shared by the test modules: engine-style requests and real processes."""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def basic(token, password=""):
    raw = base64.b64encode(f"{token}:{password}".encode()).decode()
    return f"Basic {raw}"


def engine_request(client, method, path, token=None, body=None, raw=None, **extra):
    """Call an engine endpoint through Django's test client, the way the Go client does:
    JSON body on every method, Basic auth with the token as user name."""
    if token is not None:
        extra.setdefault("HTTP_AUTHORIZATION", basic(token))
    if raw is None:
        raw = b"" if body is None else json.dumps(body).encode() + b"\n"
    return client.generic(method, path, data=raw, content_type="application/json", **extra)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url_for_children():
    """A DATABASE_URL naming the database the tests use (the test database)."""
    conf = connection.settings_dict
    if conf["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{conf['NAME']}"
    user = conf.get("USER") or ""
    password = conf.get("PASSWORD") or ""
    cred = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"postgres://{cred}{conf.get('HOST') or '127.0.0.1'}:{conf.get('PORT') or 5432}/{conf['NAME']}"


def child_env(**overrides):
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "cacheweb.settings",
            "DATABASE_URL": database_url_for_children(),
            "CACHEWEB_SECRET_KEY": settings.SECRET_KEY,
            "CACHEWEB_DATA_DIR": str(settings.DATA_DIR),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


class Process:
    """A child process with its output in a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, name, cmd, env, cwd=ROOT):
        self.name = name
        self.log_path = Path(settings.DATA_DIR) / f"{name}-{os.getpid()}-{time.time_ns()}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, grace=10):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class LiveService(Process):
    """gunicorn serving the real WSGI stack on a free loopback port."""

    def __init__(self, **env_overrides):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = child_env(**{"CACHEWEB_BIND": f"127.0.0.1:{self.port}", "CACHEWEB_WEB_WORKERS": 1, **env_overrides})
        cmd = [sys.executable, "-m", "gunicorn", "cacheweb.wsgi:application", "--config", "python:cacheweb.gunicorn_conf"]
        super().__init__("gunicorn", cmd, env)
        self._wait_ready()

    def _wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.output()}")
            try:
                requests.get(self.url + "/healthz", timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not start:\n{self.output()}")


class CeleryWorker(Process):
    def __init__(self, **env_overrides):
        cmd = [sys.executable, "-m", "celery", "-A", "cacheweb", "worker", "--loglevel", "INFO",
               "--concurrency", "2", "--pool", "prefork", "-n", f"test-{os.getpid()}@%h"]
        super().__init__("celery", cmd, child_env(**env_overrides))


def chunked_request(url, method, path, headers, chunks):
    """Send a request with a chunked body over a raw socket, as Go's client does for
    bodies written through an io.Pipe. Returns (status, headers, body bytes)."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Transfer-Encoding: chunked",
             "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode()
    for chunk in chunks:
        payload += b"%x\r\n%s\r\n" % (len(chunk), chunk)
    payload += b"0\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(payload)
        data = b""
        while True:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    status = int(status_line.split()[1])
    resp_headers = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        resp_headers[k.strip().lower()] = v.strip()
    if resp_headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return status, resp_headers, body


def _dechunk(data):
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out
