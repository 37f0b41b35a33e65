"""Run the service's roles (web, worker, scheduler) and stop them together.

`manage.py serve` works out the commands with Django's settings, then replaces itself
with this script, run by file path so that nothing of Django or Celery is loaded: the
process that only waits on its children stays a few MB instead of a whole Django
process.

    python -P cacheweb/supervisor.py '{"web": [argv...], "worker": [argv...]}'
"""

import json
import os
import signal
import subprocess
import sys
import time

STOP_GRACE = 20


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


def _stop_all(children):
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


def supervise(commands):
    """Start each role, wait until one exits or SIGINT/SIGTERM arrives, stop them all.
    Returns the exit status: 0 when stopped by a signal, else the failed role's."""
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # Each role in a process group of its own, so that stopping it also reaches what it
    # forked (gunicorn workers, Celery's pool and embedded scheduler) and nothing is left
    # behind when this returns.
    children = {name: subprocess.Popen(cmd, start_new_session=True) for name, cmd in commands.items()}
    exit_code = 0
    while not stopping:
        for name, child in children.items():
            code = child.poll()
            if code is not None:
                print(f"{name} exited with status {code}; stopping the others.", file=sys.stderr, flush=True)
                exit_code = code or 1
                stopping = True
                break
        time.sleep(0.5)
    _stop_all(children)
    return exit_code


if __name__ == "__main__":
    sys.exit(supervise(json.loads(sys.argv[1])))
