"""gunicorn settings for `manage.py serve`; every value can be changed from the environment."""

import os

from cacheweb.env import env_int, env_str
from cacheweb.serving import bind_setting, control_socket_path

# Longest path a Unix socket address holds on Linux, less its terminating NUL.
MAX_SOCKET_PATH = 107

bind = bind_setting()
# Not gunicorn's default, which is one path per user shared by every instance: each
# instance its own, beside its data. When the data directory's path is too long for a
# socket address, no control socket (cacheweb itself never uses it).
_control = control_socket_path()
if len(os.fsencode(str(_control))) <= MAX_SOCKET_PATH:
    control_socket = str(_control)
else:
    control_socket_disable = True
# Threads, because engine calls mostly wait on the database or on blob I/O; request
# heads are read in the event loop, so a stalled client holds no thread
# (cacheweb/gworker.py, CACHEWEB_CLIENT_TIMEOUT).
worker_class = "cacheweb.gworker.HeadFirstWorker"
# Connections per worker, stalled ones included (each is a file descriptor).
worker_connections = env_int("CACHEWEB_WEB_CONNECTIONS", 1000, minimum=10)
workers = env_int("CACHEWEB_WEB_WORKERS", 2, minimum=1)
threads = env_int("CACHEWEB_WEB_THREADS", 8, minimum=1)
# Large layer uploads can take minutes; gthread workers stay alive meanwhile.
timeout = env_int("CACHEWEB_WEB_TIMEOUT", 600, minimum=30)
graceful_timeout = 30
# An idle kept-alive connection is a client sending nothing: no longer than a stalled one.
keepalive = min(30, env_int("CACHEWEB_CLIENT_TIMEOUT", 30, minimum=1))
max_requests = env_int("CACHEWEB_WEB_MAX_REQUESTS", 0, minimum=0)
max_requests_jitter = 100
accesslog = "-" if env_str("CACHEWEB_ACCESS_LOG", "") in ("1", "true", "yes") else None
# Engine tokens (the Basic-auth user) and URL signatures only as a prefix.
logger_class = "cacheweb.accesslog.RedactingLogger"
errorlog = "-"
sendfile = True
# Load Django once in the master and fork: the workers share its pages instead of each
# holding a copy (about 30 MB less per worker).
preload_app = True


def when_ready(server):
    """In the master, once the application is loaded and before any worker is forked:
    load what the first requests would otherwise load in each worker (URL patterns and
    the views they import, the template engine), then move every object to the GC's
    permanent generation. Workers then share those pages with the master; without the
    freeze, each worker's first collection writes to all of them and copies them."""
    import gc

    from django.template import engines
    from django.urls import get_resolver

    _check_blob_store(server)

    get_resolver().url_patterns
    for engine in engines.all():
        engine.get_template("base.html")
    gc.freeze()


def _check_blob_store(server):
    """Refuse to serve from a blob directory that is not this database's store (a second
    machine with a data directory of its own): it would take every blob it lacks for lost
    (blobs/identity.py). A database not answering yet is no reason to refuse: the check
    before anything is marked lost still holds then."""
    import sys

    from django.db import DatabaseError, connections

    from blobs.identity import WrongBlobDirectory, check_store

    try:
        check_store()
    except WrongBlobDirectory as exc:
        server.log.error("cacheweb refuses to start: %s", exc)
        sys.exit(3)
    except DatabaseError as exc:
        server.log.warning("blob store identity not checked at start, the database did not answer: %s", exc)
    finally:
        # Not one connection shared by the workers forked next.
        connections.close_all()
