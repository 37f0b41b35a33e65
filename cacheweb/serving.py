"""How `manage.py serve` starts the web server, the Celery worker and the scheduler."""

import os
import sys

from django.conf import settings

from cacheweb.env import env_int, env_str


def bind_address():
    bind = env_str("CACHEWEB_BIND", "127.0.0.1:8080")
    host, _, port = bind.rpartition(":")
    return host.strip("[]"), int(port)


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
