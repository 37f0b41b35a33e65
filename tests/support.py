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
    """A child process with its output in a log file, stopped with SIGTERM then SIGKILL.
    It leads a process group of its own, so that stop() can reach its children too."""

    def __init__(self, name, cmd, env, cwd=ROOT):
        self.name = name
        self.log_path = Path(settings.DATA_DIR) / f"{name}-{os.getpid()}-{time.time_ns()}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, grace=10, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        self.log.close()

    def kill(self):
        """SIGKILL to the whole group (a Celery worker's pool, gunicorn's workers)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def _reap_group(self):
        # Children the leader left behind (it exited without waiting for them) would
        # hold the test database's connections and log file open.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_all(processes, grace=10):
    """Stop processes side by side: SIGTERM to every one, then wait for each (SIGKILL
    after `grace` seconds in all), so that their graceful shutdowns overlap instead of
    adding up."""
    for process in processes:
        if process.proc.poll() is None:
            process.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.proc.wait(timeout=max(0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
        process._reap_group()
        process.log.close()


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
        # Once the master has bound the port, a connection waits in its backlog until a
        # worker answers it: the request's own wait is the readiness event. Before that,
        # connections are refused, and retried at a short interval.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.output()}")
            try:
                requests.get(self.url + "/healthz", timeout=max(1, deadline - time.monotonic()))
                return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"gunicorn did not start:\n{self.output()}")

    def stop(self, grace=10):
        """gunicorn's quick shutdown (SIGINT): the test has its answers, so there is no
        request to finish, and a graceful one (SIGTERM) takes 2-3 s even idle, while the
        workers' loops notice. Workers still exit through sys.exit: atexit work (blob use
        counts, blobs/apps.py) is done."""
        super().stop(grace=grace, sig=signal.SIGINT)


class CeleryWorker(Process):
    def __init__(self, **env_overrides):
        cmd = [sys.executable, "-m", "celery", "-A", "cacheweb", "worker", "--loglevel", "INFO",
               "--concurrency", "2", "--pool", "prefork", "-n", f"test-{os.getpid()}@%h"]
        super().__init__("celery", cmd, child_env(**env_overrides))

    def stop(self):
        """Kill the worker and its pool at once. A test awaits the work it checks before
        it stops a worker, so nothing is left that a warm shutdown would finish, and a
        warm (or cold) shutdown takes 2-6 s even idle: the consumer's broker poll, the
        pool's and the timer's thread joins. Killed, the worker also cannot hand a task it
        holds back to the queue for a later test's worker (kombu's restore on close):
        on Redis such a message stays unacknowledged until its visibility timeout."""
        if self.proc.poll() is None:
            self.kill()
        self._reap_group()
        self.log.close()


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
