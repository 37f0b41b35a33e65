import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand

from cacheweb import serving

STOP_GRACE = 20


class Command(BaseCommand):
    help = (
        "Start the web server (gunicorn), a Celery worker and the Celery scheduler, and stop "
        "them together. Scaled out, run each role on its own with --only."
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
        host, port = serving.bind_address()
        self.stdout.write(f"Starting {', '.join(commands)}; web on http://{host}:{port}/ . Ctrl-C stops all.")
        self.stdout.flush()
        # Each role in a process group of its own, so that stopping it also reaches what it
        # forked (gunicorn workers, Celery's pool and embedded scheduler) and nothing is
        # left behind when this command returns.
        children = {
            name: subprocess.Popen(cmd, env=serving.child_env(), start_new_session=True)
            for name, cmd in commands.items()
        }
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        while not stopping:
            for name, child in children.items():
                code = child.poll()
                if code is not None:
                    self.stderr.write(f"{name} exited with status {code}; stopping the others.")
                    exit_code = code or 1
                    stopping = True
                    break
            time.sleep(0.5)
        self._stop_all(children)
        sys.exit(exit_code)

    def _stop_all(self, children):
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for child in children.values():
            _kill_group(child.pid)


def _kill_group(pgid):
    """Stop whatever is still running in a role's process group once its leader is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        for _ in range(50):
            time.sleep(0.1)
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
