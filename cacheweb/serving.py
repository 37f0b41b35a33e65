"""How `manage.py serve` starts the web server, the Celery worker and the scheduler."""

import os
import sys
from pathlib import Path

from django.conf import settings

from cacheweb.bindcheck import DEFAULT_BIND
from cacheweb.env import env_int, env_str

BASE_DIR = Path(__file__).resolve().parent.parent


def bind_setting():
    return env_str("CACHEWEB_BIND", DEFAULT_BIND)


def bind_address():
    host, _, port = bind_setting().rpartition(":")
    return host.strip("[]"), int(port)


def data_dir():
    """CACHEWEB_DATA_DIR as settings reads it, for code that runs before Django does."""
    return Path(env_str("CACHEWEB_DATA_DIR", str(BASE_DIR / "data"))).resolve()


def control_socket_path():
    """Where gunicorn's control socket (for `gunicornc`) goes: one per data directory and
    port. gunicorn's own default is one path per user, which a second instance on the
    machine (a test server, seed_demo's temporary one, another checkout) would take over."""
    _, port = bind_address()
    return data_dir() / f"gunicorn-{port}.ctl"


def web_command():
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "cacheweb.wsgi:application",
        "--config",
        "python:cacheweb.gunicorn_conf",
    ]


def worker_command(beat):
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "cacheweb",
        "worker",
        "--loglevel",
        settings.LOG_LEVEL,
        "--concurrency",
        str(env_int("CACHEWEB_WORKER_CONCURRENCY", 2, minimum=1)),
    ]
    if beat:
        cmd += ["--beat", "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME]
    return cmd


def beat_command():
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "cacheweb",
        "beat",
        "--loglevel",
        settings.LOG_LEVEL,
        "--schedule",
        settings.CELERY_BEAT_SCHEDULE_FILENAME,
    ]


def child_env():
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "cacheweb.settings")
    return env
