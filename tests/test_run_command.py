"""The README's run command, as a new user runs it: bin/run on an empty data dir."""

import os
import re
import signal
import subprocess
import time

import pytest

from tests.support import ROOT, basic, chunked_request, free_port

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


def test_bin_run_serves_config_to_a_go_shaped_request(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS and k != "DJANGO_SETTINGS_MODULE"}
    env.update(CACHEWEB_DATA_DIR=str(tmp_path / "data"), CACHEWEB_BIND=f"127.0.0.1:{port}")
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(ROOT / "bin" / "run")], cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    started = []
    try:
        token = url = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            text = log_path.read_text(errors="replace")
            found_url = re.search(r"_EXPERIMENTAL_DAGGER_CACHESERVICE_URL=(\S+)", text)
            found_token = re.search(r"_EXPERIMENTAL_DAGGER_CACHESERVICE_TOKEN=(\S+)", text)
            if found_url and found_token and "Listening at" in text:
                url, token = found_url.group(1), found_token.group(1)
                break
            time.sleep(0.3)
        assert token, f"bin/run did not start:\n{log_path.read_text(errors='replace')[-4000:]}"
        assert url == f"http://127.0.0.1:{port}/magicache"
        text = log_path.read_text()
        assert re.search(r"user: admin\s+password: \S+", text)
        headers = {"Authorization": basic(token), "Content-Type": "application/json",
                   "User-Agent": "Go-http-client/1.1"}
        status, _, body = chunked_request(f"http://127.0.0.1:{port}", "GET", "/magicache/config", headers,
                                          [b"{", b'"EngineID":"fresh-engine"}\n'])
        assert status == 200, body
        assert b'"ImportPeriod":' in body
        started = descendants(proc.pid)
        commands = [cmdline(pid) for pid in started]
        assert any("gunicorn" in c for c in commands) and any("celery" in c for c in commands), commands
        # bin/run became the supervisor, which holds no Django: a few MB, not 70.
        assert "supervisor.py" in cmdline(proc.pid)
        assert rss_mib(proc.pid) < 30
    finally:
        # Ctrl-C reaches the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("bin/run did not stop on Ctrl-C")
    leftovers = [pid for pid in started if os.path.exists(f"/proc/{pid}")]
    assert leftovers == [], "processes left running after Ctrl-C"
    assert "fresh-engine" in subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-c",
         "import django;django.setup();from accounts.models import Engine;"
         "print(list(Engine.objects.values_list('engine_id', flat=True)))"],
        cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "cacheweb.settings"}, capture_output=True, text=True,
    ).stdout


def test_when_one_role_dies_the_others_are_stopped(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env.update(CACHEWEB_DATA_DIR=str(tmp_path / "data"), CACHEWEB_BIND=f"127.0.0.1:{port}",
               DJANGO_SETTINGS_MODULE="cacheweb.settings")
    python = str(ROOT / ".venv" / "bin" / "python")
    subprocess.run([python, "manage.py", "bootstrap"], cwd=ROOT, env=env, check=True, capture_output=True)
    proc = subprocess.Popen([python, "manage.py", "serve"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        web = []
        while time.monotonic() < deadline and not web:
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                web = [int(pid) for pid in f.read().split() if "gunicorn" in cmdline(int(pid))]
            time.sleep(0.3)
        assert web, "gunicorn did not start"
        everything = descendants(proc.pid)
        os.kill(web[0], signal.SIGKILL)  # the gunicorn master
        assert proc.wait(timeout=60) != 0
        output = proc.stdout.read().decode(errors="replace")
        assert "web exited with status" in output
        time.sleep(0.5)
        assert [pid for pid in everything if os.path.exists(f"/proc/{pid}") and cmdline(pid)] == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
