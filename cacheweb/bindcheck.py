"""Is the address in CACHEWEB_BIND free to listen on? Standard library only: `bin/run`
runs this file with any Python 3 before it prints or installs anything, and
`manage.py serve` imports it.

    python3 cacheweb/bindcheck.py        exit 0 if free, else 1 with a message on stderr
"""

import errno
import os
import socket
import sys

DEFAULT_BIND = "127.0.0.1:8080"


def split_bind(bind):
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"CACHEWEB_BIND={bind!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def problem(bind):
    """Why cacheweb cannot listen on `bind` ("host:port"), or None when it can."""
    try:
        host, port = split_bind(bind)
    except ValueError as exc:
        return str(exc)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As gunicorn binds: a port left in TIME_WAIT by a previous run is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"cannot listen on {host or '*'}:{port} (CACHEWEB_BIND={bind}): another process "
                    "is using that port, perhaps cacheweb already running. Stop it, or choose a "
                    f"free address, e.g. CACHEWEB_BIND={host or '127.0.0.1'}:{port + 1}"
                )
            if exc.errno == errno.EACCES:
                return f"cannot listen on {host}:{port} (CACHEWEB_BIND={bind}): permission denied (ports below 1024 need root)"
            return f"cannot listen on {host}:{port} (CACHEWEB_BIND={bind}): {exc.strerror}"
    return None


def main():
    message = problem(os.environ.get("CACHEWEB_BIND", DEFAULT_BIND))
    if message:
        print(f"cacheweb: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
