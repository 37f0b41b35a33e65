"""Start the service's own processes (gunicorn and a Celery worker) on a free loopback
port, for commands that need a running service and were not given one."""

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from cacheweb import serving

STOP_GRACE = 20


class LocalService:
    def __init__(self, worker=True, start_timeout=60):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = serving.child_env()
        env["CACHEWEB_BIND"] = f"127.0.0.1:{self.port}"
        # Blob URLs must point at this loopback server, not at a public name set for the
        # deployment's real web server.
        env.pop("CACHEWEB_PUBLIC_URL", None)
        self.log = tempfile.NamedTemporaryFile(prefix="cacheweb-local-", suffix=".log", delete=False)
        self.children = [subprocess.Popen(serving.web_command(), env=env, stdout=self.log, stderr=subprocess.STDOUT)]
        if worker:
            self.children.append(subprocess.Popen(serving.worker_command(beat=False), env=env,
                                                  stdout=self.log, stderr=subprocess.STDOUT))
        try:
            self._wait_ready(start_timeout)
        except Exception:
            self.stop()
            raise

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in self.children:
                if child.poll() is not None:
                    raise RuntimeError(f"a service process exited with {child.returncode}; log: {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"the service did not answer on {self.url} within {timeout}s; log: {self.log.name}")

    def stop(self):
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in self.children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.log.close()

    def peak_rss_kib(self):
        """Peak resident memory of each process tree member so far (Linux VmHWM), by pid."""
        peaks = {}
        for child in self.children:
            for pid in [child.pid, *_descendants(child.pid)]:
                try:
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                peaks[pid] = int(line.split()[1])
                except OSError:
                    continue
        return peaks

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        if not any(exc):
            os.unlink(self.log.name)


def _descendants(pid):
    out = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return out
    for kid in kids:
        out.append(kid)
        out.extend(_descendants(kid))
    return out
