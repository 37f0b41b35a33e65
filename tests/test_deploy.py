"""deploy/docker: no Docker engine runs here, so the image's entry point is run as the
Dockerfile would run it, from the checkout instead of /app; the compose file and the Helm
values are checked against what the code and the README define."""

import json
import os
import re
import signal
import subprocess
import time

import pytest
import requests

from tests.support import ROOT, free_port

# CI runs this in the embedded pass only (pytest.ini: once).
pytestmark = pytest.mark.once

DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
COMPOSE = ROOT / "deploy" / "docker" / "compose.yaml"
HELM_VALUES = ROOT / "deploy" / "helm" / "dagger-engine-values.yaml"
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint"
SERVICE_VARS = ("DATABASE_URL", "CELERY_BROKER_URL", "CACHEWEB_S3_BUCKET", "CACHEWEB_SECRET_KEY")


def instruction(name):
    """The JSON-array form of a Dockerfile instruction, e.g. ENTRYPOINT ["..."]."""
    found = re.search(rf"^{name} (\[.*\])$", DOCKERFILE.read_text(), re.M)
    assert found, f"no {name} [...] in the Dockerfile"
    return json.loads(found.group(1))


def image_command(*args):
    """ENTRYPOINT + (args or CMD), with the image's /app meaning this checkout."""
    entrypoint = [part.replace("/app/", f"{ROOT}/", 1) if part.startswith("/app/") else part
                  for part in instruction("ENTRYPOINT")]
    return entrypoint + (list(args) or instruction("CMD"))


def image_env(tmp_path, port):
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS and k != "DJANGO_SETTINGS_MODULE"}
    env.update(CACHEWEB_DATA_DIR=str(tmp_path / "data"), CACHEWEB_BIND=f"127.0.0.1:{port}",
               PYTHON=str(ROOT / ".venv" / "bin" / "python"))
    return env


def test_the_image_command_bootstraps_serves_and_stops(tmp_path):
    port = free_port()
    env = image_env(tmp_path, port)
    done = subprocess.run(image_command("bootstrap"), cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "password:" in done.stdout and "CACHESERVICE_TOKEN" not in done.stdout
    done = subprocess.run(image_command("manage", "createtoken", "default"), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("cwt_")

    log_path = tmp_path / "web.log"
    with open(log_path, "wb") as log:
        web = subprocess.Popen(image_command(), cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and web.poll() is None:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.3)
        assert health is not None, log_path.read_text(errors="replace")
        # No worker runs in this container, so only the database, storage and broker count.
        assert health.status_code == 200 and health.json()["database"]["ok"], health.text
        # The web role collected the static files into the data dir first.
        css = requests.get(f"http://127.0.0.1:{port}/static/cacheweb.css", timeout=5)
        assert css.status_code == 200 and css.content == (ROOT / "static" / "cacheweb.css").read_bytes()
        commands = open(f"/proc/{web.pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        assert "supervisor.py" in commands and "worker" not in commands
    finally:
        # `docker stop` sends SIGTERM to the container's first process.
        os.kill(web.pid, signal.SIGTERM)
        try:
            code = web.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)
            pytest.fail("the web role did not stop on SIGTERM")
    assert code == 0, log_path.read_text(errors="replace")


def wait_for(predicate, proc, log_path, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return
        time.sleep(0.3)
    pytest.fail(f"not ready in time:\n{log_path.read_text(errors='replace')[-4000:]}")


def stop_with_sigterm(proc, log_path):
    os.kill(proc.pid, signal.SIGTERM)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("did not stop on SIGTERM")
    assert code == 0, log_path.read_text(errors="replace")[-4000:]


@pytest.mark.parametrize("role, ready", [("worker", "ready."), ("beat", "beat: Starting...")])
def test_the_worker_and_scheduler_roles_start_and_stop(tmp_path, role, ready):
    env = image_env(tmp_path, free_port())
    subprocess.run(image_command("bootstrap"), cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    log_path = tmp_path / f"{role}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(image_command(role), cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for(lambda: ready in log_path.read_text(errors="replace"), proc, log_path)
    finally:
        stop_with_sigterm(proc, log_path)


def test_the_all_role_bootstraps_and_runs_every_role(tmp_path):
    port = free_port()
    env = image_env(tmp_path, port)
    log_path = tmp_path / "all.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(image_command("all"), cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def healthy():
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(healthy, proc, log_path)
        text = log_path.read_text(errors="replace")
        assert "password:" in text and "_EXPERIMENTAL_DAGGER_CACHESERVICE_TOKEN=cwt_" in text
        commands = open(f"/proc/{proc.pid}/cmdline", "rb").read().decode(errors="replace")
        assert "gunicorn" in commands and "celery" in commands and "--beat" in commands
    finally:
        stop_with_sigterm(proc, log_path)


def test_an_unknown_role_is_refused(tmp_path):
    done = subprocess.run(image_command("webserver"), cwd=tmp_path, env=image_env(tmp_path, free_port()),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 64
    assert "unknown role 'webserver'" in done.stderr
    assert not (tmp_path / "data").exists()


def entrypoint_roles():
    return set(re.findall(r"^  (\w+)\)", ENTRYPOINT.read_text(), re.M))


def test_dockerfile_listens_where_it_says():
    text = DOCKERFILE.read_text()
    bind_port = re.search(r"CACHEWEB_BIND=0\.0\.0\.0:(\d+)", text).group(1)
    assert re.search(rf"^EXPOSE {bind_port}$", text, re.M)
    assert f"http://127.0.0.1:{bind_port}/healthz" in text
    assert instruction("CMD")[0] in entrypoint_roles()


def test_compose_runs_existing_roles_and_documented_settings():
    text = COMPOSE.read_text()
    roles = set(re.findall(r'^    command: \["(\w+)"\]$', text, re.M))
    assert roles == {"bootstrap", "web", "worker", "beat"}
    assert roles <= entrypoint_roles()
    readme = (ROOT / "README.md").read_text()
    for name in set(re.findall(r"^\s+((?:CACHEWEB|DATABASE|CELERY)_[A-Z0-9_]+):", text, re.M)):
        assert f"`{name}`" in readme, f"{name} is set in compose.yaml but not documented in the README"


def test_helm_values_use_the_dagger_chart_keys_the_readme_names():
    text = HELM_VALUES.read_text()
    assert re.search(r"^magicache:\n  enabled: true\n  url: https://\S+/magicache\n", text, re.M)
    assert re.search(r"^  secretName: \S+", text, re.M)
    assert re.search(r"^  terminationGracePeriodSeconds: (\d+)", text, re.M).group(1) == "300"
