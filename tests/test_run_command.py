"""The README's run command, as a new user runs it: bin/run on an empty data dir."""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import time

import pytest

from tests.support import ROOT, basic, chunked_request, free_port

# bin/run always starts the embedded defaults (it drops DATABASE_URL and the broker and S3
# settings), so CI's scaled-out pass would run exactly the same thing again.
pytestmark = pytest.mark.once

SERVICE_VARS = ("DATABASE_URL", "CELERY_BROKER_URL", "CACHEWEB_S3_BUCKET", "CACHEWEB_SECRET_KEY")


def descendants(pid):
    """Every process below `pid`, whatever session or group it moved to."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
                found += children
                todo += children
        except OSError:
            pass
    return found


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def run_env(tmp_path, port, data="data"):
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS and k != "DJANGO_SETTINGS_MODULE"}
    env.update(CACHEWEB_DATA_DIR=str(tmp_path / data), CACHEWEB_BIND=f"127.0.0.1:{port}")
    return env


class BinRun:
    """bin/run as a user starts it, in a session of its own, its output in a file."""

    def __init__(self, tmp_path, env, *args, name="run"):
        self.env = env
        self.log_path = tmp_path / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([str(ROOT / "bin" / "run"), *args], cwd=tmp_path, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.started = []

    def text(self):
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if "Listening at" in self.text():
                self.started = descendants(self.proc.pid)
                return self.text()
            time.sleep(0.3)
        pytest.fail(f"bin/run did not start:\n{self.text()[-4000:]}")

    def stop(self):
        """Ctrl-C, which reaches the whole foreground process group; nothing may be left."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                pytest.fail("bin/run did not stop on Ctrl-C")
        leftovers = [pid for pid in self.started if os.path.exists(f"/proc/{pid}")]
        assert leftovers == [], "processes left running after Ctrl-C"


def printed_token(text):
    found = re.search(r"_EXPERIMENTAL_DAGGER_CACHESERVICE_TOKEN=(\S+)", text)
    return found.group(1) if found else None


def get_config(port, token, engine_id):
    headers = {"Authorization": basic(token), "Content-Type": "application/json",
               "User-Agent": "Go-http-client/1.1"}
    return chunked_request(f"http://127.0.0.1:{port}", "GET", "/magicache/config", headers,
                           [b"{", b'"EngineID":"%s"}\n' % engine_id.encode()])


def test_bin_run_serves_config_to_a_go_shaped_request(tmp_path):
    port = free_port()
    env = run_env(tmp_path, port)
    run = BinRun(tmp_path, env)
    try:
        text = run.wait_listening()
        token = printed_token(text)
        assert token, text
        assert f"_EXPERIMENTAL_DAGGER_CACHESERVICE_URL=http://127.0.0.1:{port}/magicache" in text
        # The admin line names the dashboard the README sends people to.
        assert f"Log in to the dashboard at http://127.0.0.1:{port}/ " in text
        assert re.search(r"user: admin\s+password: \S+", text)
        status, _, body = get_config(port, token, "fresh-engine")
        assert status == 200, body
        assert b'"ImportPeriod":' in body
        commands = [cmdline(pid) for pid in run.started]
        assert any("gunicorn" in c for c in commands) and any("celery" in c for c in commands), commands
        # bin/run became the supervisor, which holds no Django: a few MB, not 70.
        assert "supervisor.py" in cmdline(run.proc.pid)
        assert rss_mib(run.proc.pid) < 30
    finally:
        run.stop()
    assert "fresh-engine" in subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-c",
         "import django;django.setup();from accounts.models import Engine;"
         "print(list(Engine.objects.values_list('engine_id', flat=True)))"],
        cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "cacheweb.settings"}, capture_output=True, text=True,
    ).stdout


def gunicorn_worker_pids(socket_path):
    done = subprocess.run([str(ROOT / ".venv/bin/gunicornc"), "-s", str(socket_path), "-c", "show workers", "-j"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    return {worker["pid"] for worker in json.loads(done.stdout)["workers"]}


def test_second_start_prints_no_token_and_two_instances_keep_their_own_control_socket(tmp_path):
    port = free_port()
    env = run_env(tmp_path, port)
    first = BinRun(tmp_path, env, name="first")
    try:
        token = printed_token(first.wait_listening())
        assert token
    finally:
        first.stop()

    again = BinRun(tmp_path, env, name="again")
    other_port = free_port()
    other = BinRun(tmp_path, run_env(tmp_path, other_port, data="other-data"), name="other")
    try:
        text = again.wait_listening()
        assert printed_token(text) is None, text
        assert "password:" not in text
        assert f"_EXPERIMENTAL_DAGGER_CACHESERVICE_URL=http://127.0.0.1:{port}/magicache" in text
        assert "1 active token(s) for 'default'" in text and "bin/run --new-token" in text
        # The token of the first start still works.
        assert get_config(port, token, "second-start")[0] == 200
        other.wait_listening()
        # Two instances at once, each with its own gunicorn control socket beside its data,
        # each answering for its own workers only.
        sockets = [tmp_path / "data" / f"gunicorn-{port}.ctl", tmp_path / "other-data" / f"gunicorn-{other_port}.ctl"]
        # gunicorn opens it in a thread of its own once the first workers are forked.
        deadline = time.monotonic() + 30
        while not all(path.exists() for path in sockets) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(path.exists() for path in sockets), again.text()[-2000:] + other.text()[-2000:]
        assert all(stat.S_ISSOCK(path.stat().st_mode) for path in sockets)
        mine, theirs = (gunicorn_worker_pids(path) for path in sockets)
        assert mine and theirs and not mine & theirs
        assert mine <= set(descendants(again.proc.pid)) and theirs <= set(descendants(other.proc.pid))
    finally:
        again.stop()
        other.stop()

    newer = BinRun(tmp_path, env, "--new-token", name="newer")
    try:
        new_token = printed_token(newer.wait_listening())
        assert new_token and new_token != token
        assert get_config(port, new_token, "new-token")[0] == 200
    finally:
        newer.stop()


def test_busy_port_is_reported_before_anything_else(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = run_env(tmp_path, port)
        done = subprocess.run([str(ROOT / "bin" / "run")], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"cacheweb: cannot listen on 127.0.0.1:{port} (CACHEWEB_BIND=127.0.0.1:{port}): another process is "
        f"using that port, perhaps cacheweb already running. Stop it, or choose a free address, e.g. "
        f"CACHEWEB_BIND=127.0.0.1:{port + 1}"
    ]
    # Nothing was set up: no data directory, no database.
    assert not (tmp_path / "data").exists()


def _children(pid, word):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split() if word in cmdline(int(child))]


def _await_child(pid, word, other_than=(), timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [child for child in _children(pid, word) if child not in other_than]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {word} child of {pid}")


@pytest.mark.once  # embedded whatever the environment: the scaled-out pass adds nothing
def test_a_role_that_dies_is_restarted_and_the_others_keep_running(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env.update(CACHEWEB_DATA_DIR=str(tmp_path / "data"), CACHEWEB_BIND=f"127.0.0.1:{port}",
               DJANGO_SETTINGS_MODULE="cacheweb.settings")
    python = str(ROOT / ".venv" / "bin" / "python")
    done = subprocess.run([python, "manage.py", "bootstrap"], cwd=ROOT, env=env, check=True, capture_output=True,
                          text=True)
    token = printed_token(done.stdout + done.stderr)
    proc = subprocess.Popen([python, "manage.py", "serve"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        web = _await_child(proc.pid, "gunicorn")
        worker = _await_child(proc.pid, "celery")
        first_generation = descendants(worker)
        os.kill(worker, signal.SIGKILL)  # the Celery master; its pool is left orphaned
        # Twice, to see the back-off delay grow.
        second = _await_child(proc.pid, "celery", other_than=[worker])
        os.kill(second, signal.SIGKILL)
        third = _await_child(proc.pid, "celery", other_than=[worker, second])
        # The web server was never stopped, and serves.
        assert _children(proc.pid, "gunicorn") == [web]
        deadline = time.monotonic() + 30
        while True:
            try:
                status = get_config(port, token, "restart-engine")[0]
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.3)
        assert status == 200
        # What the killed worker forked went with it.
        assert [pid for pid in first_generation if os.path.exists(f"/proc/{pid}") and cmdline(pid)] == []
        everything = descendants(proc.pid)
        assert third in everything
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        output = proc.stdout.read().decode(errors="replace")
        assert re.search(r"worker exited with status -9; restarting it in 1 s", output), output
        assert re.search(r"worker exited with status -9; restarting it in 2 s", output), output
        assert output.count("worker restarted") == 2
        time.sleep(0.5)
        assert [pid for pid in everything if os.path.exists(f"/proc/{pid}") and cmdline(pid)] == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
