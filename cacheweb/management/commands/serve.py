import json
import os
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from cacheweb import bindcheck, serving

SUPERVISOR = Path(__file__).resolve().parents[2] / "supervisor.py"


class Command(BaseCommand):
    help = (
        "Start the web server (gunicorn), a Celery worker and the Celery scheduler, restart "
        "one that exits (with back-off) and stop them together. Scaled out, run each role on "
        "its own with --only."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--only",
            choices=["web", "worker", "beat"],
            help="run one role only (scaled-out deployments run the scheduler exactly once)",
        )

    def handle(self, only, **options):
        if only == "web":
            commands = {"web": serving.web_command()}
        elif only == "worker":
            commands = {"worker": serving.worker_command(beat=False)}
        elif only == "beat":
            commands = {"beat": serving.beat_command()}
        else:
            commands = {"web": serving.web_command(), "worker": serving.worker_command(beat=True)}
        if "web" in commands:
            problem = bindcheck.problem(serving.bind_setting())
            if problem:
                raise CommandError(problem)
        host, port = serving.bind_address()
        self.stdout.write(f"Starting {', '.join(commands)}; web on http://{host}:{port}/ . Ctrl-C stops all.")
        self.stdout.flush()
        sys.stderr.flush()
        # Become the supervisor (same process id, so Ctrl-C and service managers still
        # reach it), leaving this Django process's memory behind. -P: do not put
        # cacheweb/ on sys.path, where celery.py would shadow the real package.
        os.execve(sys.executable, [sys.executable, "-P", str(SUPERVISOR), json.dumps(commands)], serving.child_env())
