"""Run the service's roles (web, worker, scheduler), restart one that exits, stop them together.

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
# A role that exits is started again after a delay doubling from RESTART_MIN to
# RESTART_MAX; one that ran STABLE seconds before exiting starts again from RESTART_MIN.
RESTART_MIN = float(os.environ.get("CACHEWEB_RESTART_MIN", "1"))
RESTART_MAX = float(os.environ.get("CACHEWEB_RESTART_MAX", "30"))
STABLE = 60.0


def _log(message):
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} supervisor: {message}", file=sys.stderr, flush=True)


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


def _start(cmd):
    # Each role in a process group of its own, so that stopping it also reaches what it
    # forked (gunicorn workers, Celery's pool and embedded scheduler) and nothing is left
    # behind.
    return subprocess.Popen(cmd, start_new_session=True)


def supervise(commands):
    """Start each role and keep it running until SIGINT/SIGTERM arrives, then stop them
    all and return 0. A role that exits is restarted with back-off, the others untouched:
    a worker that a broker outage kills must not take the web server with it."""
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    children = {name: _start(cmd) for name, cmd in commands.items()}
    started = {name: time.monotonic() for name in commands}
    delay = {name: RESTART_MIN for name in commands}
    restart_at = {}
    while not stopping:
        now = time.monotonic()
        for name, child in children.items():
            if name in restart_at:
                if now >= restart_at[name]:
                    del restart_at[name]
                    children[name] = _start(commands[name])
                    started[name] = now
                    _log(f"{name} restarted (pid {children[name].pid})")
                continue
            code = child.poll()
            if code is None:
                continue
            # Whatever it forked goes with it, so the new one does not share its port or queue.
            _kill_group(child.pid)
            if now - started[name] >= STABLE:
                delay[name] = RESTART_MIN
            _log(f"{name} exited with status {code}; restarting it in {delay[name]:.0f} s")
            restart_at[name] = now + delay[name]
            delay[name] = min(delay[name] * 2, RESTART_MAX)
        time.sleep(0.2)
    _stop_all({name: child for name, child in children.items() if name not in restart_at})
    return 0


if __name__ == "__main__":
    sys.exit(supervise(json.loads(sys.argv[1])))
