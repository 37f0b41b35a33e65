"""cacheweb settings. Every value comes from the environment; README.md lists them all.

With nothing set, cacheweb runs "embedded": SQLite, blobs on local disk and a Celery
broker on the filesystem, all under CACHEWEB_DATA_DIR.
"""

import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from cacheweb.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("CACHEWEB_DATA_DIR", str(BASE_DIR / "data"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DATABASE_URL = env_str("DATABASE_URL")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
S3_BUCKET = env_str("CACHEWEB_S3_BUCKET")
EMBEDDED = not (DATABASE_URL or CELERY_BROKER_URL or S3_BUCKET)


def _secret_key():
    key = env_str("CACHEWEB_SECRET_KEY")
    if key:
        return key
    if not EMBEDDED:
        raise ImproperlyConfigured(
            "CACHEWEB_SECRET_KEY must be set when DATABASE_URL, CELERY_BROKER_URL or "
            "CACHEWEB_S3_BUCKET is set: every process of a deployment must share it."
        )
    # Embedded: one key per data directory, kept beside the data it signs for.
    path = DATA_DIR / "secret_key"
    if not path.exists():
        fd_path = path.with_suffix(".tmp")
        fd_path.write_text(secrets.token_urlsafe(50))
        fd_path.chmod(0o600)
        fd_path.replace(path)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
# Rotating the key: put the old one here for as long as what it signed should stay valid
# (sessions, blob URLs already handed to engines: CACHEWEB_BLOB_URL_LIFETIME).
SECRET_KEY_FALLBACKS = env_list("CACHEWEB_SECRET_KEY_FALLBACKS", [])
DEBUG = env_bool("CACHEWEB_DEBUG", False)
ALLOWED_HOSTS = env_list("CACHEWEB_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CACHEWEB_CSRF_TRUSTED_ORIGINS", [])
# Absolute base URL that engines use to reach this service, for blob URLs on the
# built-in storage. Empty: derived from each request's Host.
PUBLIC_URL = env_str("CACHEWEB_PUBLIC_URL").rstrip("/")
if env_bool("CACHEWEB_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
# Served over TLS (by the proxy): cookies only over HTTPS, and HSTS on HTTPS answers.
TLS = env_bool("CACHEWEB_TLS", PUBLIC_URL.startswith("https://"))
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = TLS
SECURE_HSTS_SECONDS = env_int("CACHEWEB_HSTS_SECONDS", 31536000, minimum=0) if TLS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("CACHEWEB_HSTS_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = False
# No plain-HTTP redirect: engines do not follow one for a PUT. The proxy redirects.
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# Every response carries it; the pages use no inline script or style.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# /healthz shows its details (database, storage, broker, worker) to superusers and to
# requests with "Authorization: Bearer <this>"; everyone else gets the status only.
METRICS_TOKEN = env_str("CACHEWEB_METRICS_TOKEN", "")
# Login throttling: this many failed logins for one user name, or five times as many
# from one address, within the window refuse further attempts until it has passed.
LOGIN_FAILURES_ALLOWED = env_int("CACHEWEB_LOGIN_FAILURES", 5, minimum=1)
LOGIN_FAILURE_WINDOW = env_int("CACHEWEB_LOGIN_WINDOW", 900, minimum=1)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "cacheweb",
    "accounts",
    "blobs",
    "records",
    "mounts",
    "retention",
    "api",
    "activity",
    "audit",
]

MIDDLEWARE = [
    "cacheweb.security.ContentSecurityPolicyMiddleware",
    # Outermost but for the CSP header: views hitting an unavailable dependency get 503.
    "cacheweb.dependencies.DependencyErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# An unavailable database, object store or broker answers 503 with this Retry-After
# (seconds): cacheweb.dependencies.
UNAVAILABLE_RETRY_AFTER = env_int("CACHEWEB_RETRY_AFTER", 5, minimum=1)

ROOT_URLCONF = "cacheweb.urls"
WSGI_APPLICATION = "cacheweb.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Bounded waits on the database: a server that is down or does not answer costs a
# request this long (then a 503), never a hang.
DB_CONNECT_TIMEOUT = env_int("CACHEWEB_DB_CONNECT_TIMEOUT", 5, minimum=1)
# Longest a PostgreSQL statement may run, in seconds; 0: no limit.
DB_STATEMENT_TIMEOUT = env_int("CACHEWEB_DB_STATEMENT_TIMEOUT", 60, minimum=0)
# TCP keepalives on PostgreSQL connections: idle seconds before the first probe; a peer
# that stops acknowledging is dropped after about this plus 3 probes 5 s apart.
DB_KEEPALIVE_IDLE = env_int("CACHEWEB_DB_KEEPALIVE_IDLE", 30, minimum=1)
# How long SQLite waits for another process's write lock before the request gets a 503.
SQLITE_BUSY_TIMEOUT = env_int("CACHEWEB_SQLITE_BUSY_TIMEOUT", 10, minimum=1)
SQLITE_OPTIONS = {
    # WAL lets the web server and the worker write without locking readers out;
    # IMMEDIATE transactions wait for the busy timeout instead of failing at the first
    # write after a read.
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": SQLITE_BUSY_TIMEOUT,
}


def postgres_options():
    """libpq options bounding every wait on the server (options in DATABASE_URL's
    query string win)."""
    options = {
        "connect_timeout": DB_CONNECT_TIMEOUT,
        "keepalives": 1,
        "keepalives_idle": DB_KEEPALIVE_IDLE,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        # Unacknowledged data (a server gone without a FIN) fails the connection after
        # as long as keepalives would take.
        "tcp_user_timeout": (DB_KEEPALIVE_IDLE + 15) * 1000,
    }
    if DB_STATEMENT_TIMEOUT:
        options["options"] = f"-c statement_timeout={DB_STATEMENT_TIMEOUT * 1000}"
    return options


if DATABASE_URL:
    # Health checks: a pooled connection that went stale (the server restarted, a
    # proxy dropped it) is replaced before a request uses it, instead of failing it.
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"]["OPTIONS"] = {**postgres_options(), **DATABASES["default"].get("OPTIONS", {})}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "cacheweb.sqlite3",
            # A file, not memory, so that servers started by the tests share it.
            "TEST": {"NAME": DATA_DIR / "test-cacheweb.sqlite3"},
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = dict(SQLITE_OPTIONS)
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Blob storage: local disk under the data dir, or S3 when CACHEWEB_S3_BUCKET is set.
BLOB_DIR = DATA_DIR / "blobs"
S3_ENDPOINT_URL = env_str("CACHEWEB_S3_ENDPOINT_URL")
S3_REGION = env_str("CACHEWEB_S3_REGION", "us-east-1")
S3_ACCESS_KEY_ID = env_str("CACHEWEB_S3_ACCESS_KEY_ID")
S3_SECRET_ACCESS_KEY = env_str("CACHEWEB_S3_SECRET_ACCESS_KEY")
S3_ADDRESSING_STYLE = env_str("CACHEWEB_S3_ADDRESSING_STYLE", "path")
S3_PREFIX = env_str("CACHEWEB_S3_PREFIX", "cacheweb")
if S3_ADDRESSING_STYLE not in {"path", "virtual", "auto"}:
    raise ImproperlyConfigured("CACHEWEB_S3_ADDRESSING_STYLE must be path, virtual or auto")

# Bounded waits on the S3 store: seconds to connect, seconds a read may wait, and
# attempts per call (the first included). A store that is down or does not answer costs
# about connect/read timeout times attempts, then a 503.
S3_CONNECT_TIMEOUT = env_int("CACHEWEB_S3_CONNECT_TIMEOUT", 3, minimum=1)
S3_READ_TIMEOUT = env_int("CACHEWEB_S3_READ_TIMEOUT", 10, minimum=1)
S3_MAX_ATTEMPTS = env_int("CACHEWEB_S3_MAX_ATTEMPTS", 2, minimum=1)

if S3_BUCKET:
    from botocore.config import Config as _S3Config

    BLOB_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": S3_ENDPOINT_URL or None,
            "region_name": S3_REGION,
            "access_key": S3_ACCESS_KEY_ID or None,
            "secret_key": S3_SECRET_ACCESS_KEY or None,
            "addressing_style": S3_ADDRESSING_STYLE,
            "signature_version": "s3v4",
            "location": S3_PREFIX,
            "file_overwrite": True,
            "default_acl": None,
            "querystring_auth": True,
            # Given a client config, django-storages takes the addressing style and
            # signature version from it only.
            "client_config": _S3Config(
                s3={"addressing_style": S3_ADDRESSING_STYLE},
                signature_version="s3v4",
                connect_timeout=S3_CONNECT_TIMEOUT,
                read_timeout=S3_READ_TIMEOUT,
                retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
            ),
        },
    }
else:
    BLOB_DIR.mkdir(parents=True, exist_ok=True)
    BLOB_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": BLOB_DIR, "file_permissions_mode": 0o640},
    }

STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": DATA_DIR / "media"},
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
    "blobs": BLOB_STORAGE,
}

# How long a blob URL handed to an engine stays valid. Long enough for a slow,
# re-opened download of a large layer.
BLOB_URL_LIFETIME = env_int("CACHEWEB_BLOB_URL_LIFETIME", 6 * 3600, minimum=60)

# Defaults for new organizations (seconds); each organization can change its own.
DEFAULT_IMPORT_PERIOD = env_int("CACHEWEB_IMPORT_PERIOD", 300, minimum=1)
DEFAULT_EXPORT_PERIOD = env_int("CACHEWEB_EXPORT_PERIOD", 300, minimum=1)
DEFAULT_EXPORT_TIMEOUT = env_int("CACHEWEB_EXPORT_TIMEOUT", 600, minimum=1)

# The longest an /import waits (seconds) for a build of its organization's import in
# progress elsewhere when the stored body is older than the changes it must include;
# past it, the last good body is served (and logged).
IMPORT_WAIT = env_int("CACHEWEB_IMPORT_WAIT", 10, minimum=0)
# Disk for each engine's last /records body, so that its next post is analysed over only
# what changed (records.exportmemo); 0 turns it off.
EXPORT_MEMO_MB = env_int("CACHEWEB_EXPORT_MEMO_MB", 4096, minimum=0)

# Engine request bodies (JSON) above this many bytes get 413.
MAX_ENGINE_BODY = env_int("CACHEWEB_MAX_ENGINE_BODY", 256 * 1024 * 1024, minimum=1024)

# Celery. Without a broker URL the broker is a directory under the data dir: a real
# queue that a real worker consumes, with no server to run.
BROKER_DIR = DATA_DIR / "broker"
# Bounded wait to publish a task: seconds per connection attempt or broker reply, and
# retries after the first attempt. A broker that is down or does not answer costs a
# request about timeout times (retries + 1) seconds.
BROKER_TIMEOUT = env_int("CACHEWEB_BROKER_TIMEOUT", 3, minimum=1)
BROKER_PUBLISH_RETRIES = env_int("CACHEWEB_BROKER_PUBLISH_RETRIES", 1, minimum=0)
CELERY_BROKER_CONNECTION_TIMEOUT = BROKER_TIMEOUT
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": BROKER_PUBLISH_RETRIES,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}
if CELERY_BROKER_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
    if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        # Without a socket timeout a publish on a connection the broker stopped
        # answering waits forever. Longer than the consumer's 1 s BRPOP.
        CELERY_BROKER_TRANSPORT_OPTIONS.update(
            socket_timeout=BROKER_TIMEOUT + 2, socket_connect_timeout=BROKER_TIMEOUT, socket_keepalive=True
        )
else:
    CELERY_BROKER_URL = "filesystem://"
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("CACHEWEB_CELERY_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Reconnect to a broker that went away for as long as it takes (Celery's default gives up
# after 100 attempts, and the worker exits).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Seconds after which work recorded in the outbox (cacheweb.outbox) and still not done is
# published again by the scheduler's sweep (every 30 s): how long a broker outage or a
# lost message can delay an import rebuild, a mount upload confirmation or an index.
OUTBOX_RETRY_AFTER = env_int("CACHEWEB_OUTBOX_RETRY_AFTER", 120, minimum=10)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["cacheweb.parsers.FastJSONParser"],
    "EXCEPTION_HANDLER": "cacheweb.engine_api.json_exception_handler",
    "UNAUTHENTICATED_USER": None,
    # The operator API's schema (api/); engine views are left out of it (api.schema).
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "cacheweb operator API",
    "DESCRIPTION": "Browse and evict an organization's cache, manage its engine tokens. "
    "Authenticate with a personal API token: Authorization: Bearer cwu_...",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "PREPROCESSING_HOOKS": ["api.schema.only_operator_api"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from drf-spectacular-sidecar's static files (whitenoise), never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOG_LEVEL = env_str("CACHEWEB_LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}

# ---- settings added by the feature apps go below, one section per app ----

# blobs
# Built-in storage: fsync each uploaded blob (and its directory) before answering 200,
# because /layers trusts a verified blob at once. Off, uploads skip waiting for the disk;
# a blob a power cut then brings back short or missing is caught by its size
# (blobs.services) and uploaded again, and `manage.py verifyblobs` re-hashes.
BLOB_FSYNC = env_bool("CACHEWEB_BLOB_FSYNC", True)
# Built-in storage: /healthz reports the blob disk failing below this many free bytes.
BLOB_DISK_MIN_FREE = env_int("CACHEWEB_BLOB_DISK_MIN_FREE", 512 * 1024 * 1024, minimum=0)
# Blob use counts (download URLs issued) are written at most this often per blob.
BLOB_USE_WRITE_INTERVAL = env_int("CACHEWEB_BLOB_USE_WRITE_INTERVAL", 60, minimum=0)

# mounts
# Verified snapshots kept per cache mount besides the current one; older ones are
# released for garbage collection.
MOUNT_SNAPSHOTS_KEPT = env_int("CACHEWEB_MOUNT_SNAPSHOTS_KEPT", 2, minimum=0)
# Default largest snapshot (compressed bytes) a mount may store; 0: no limit.
MOUNT_SIZE_LIMIT = env_int("CACHEWEB_MOUNT_SIZE_LIMIT", 0, minimum=0)
# Default cap on the total of an organization's current mount snapshots; 0: no limit.
MOUNT_ORG_SIZE_LIMIT = env_int("CACHEWEB_MOUNT_ORG_SIZE_LIMIT", 0, minimum=0)
# Mount names recorded per organization; past it new names are skipped, not recorded.
MOUNTS_PER_ORG = env_int("CACHEWEB_MOUNTS_PER_ORG", 1000, minimum=1)
# Longest mount name accepted, in bytes of UTF-8. At most 2048: names are in a unique
# index, and a PostgreSQL btree entry holds about 2.7 kB.
MOUNT_NAME_MAX_BYTES = min(env_int("CACHEWEB_MOUNT_NAME_MAX_BYTES", 1024, minimum=1), 2048)
# Seconds between checks that an S3 snapshot upload has arrived.
MOUNT_CONFIRM_INTERVAL = env_int("CACHEWEB_MOUNT_CONFIRM_INTERVAL", 10, minimum=1)
# Seconds after an upload URL expires before its snapshot is given up as failed: a PUT
# that started just in time may still be finishing.
MOUNT_UPLOAD_GRACE = env_int("CACHEWEB_MOUNT_UPLOAD_GRACE", 300, minimum=0)
# Bounds of one contents index run (snapshots and layers).
CONTENTS_INDEX_MAX_SECONDS = env_int("CACHEWEB_INDEX_MAX_SECONDS", 300, minimum=1)
CONTENTS_INDEX_MAX_ENTRIES = env_int("CACHEWEB_INDEX_MAX_ENTRIES", 2_000_000, minimum=1)
CONTENTS_INDEX_MAX_BYTES = env_int("CACHEWEB_INDEX_MAX_BYTES", 64 << 30, minimum=1)
# Entries of a layer's file listing kept for its searchable listing on the dashboard.
LAYER_LISTING_MAX = env_int("CACHEWEB_LAYER_LISTING_MAX", 20_000, minimum=0)

# engines
# Engines recorded per organization (from /config); past it the longest idle are pruned.
ENGINES_PER_ORG = env_int("CACHEWEB_ENGINES_PER_ORG", 1000, minimum=1)

# records
# At most this many ExportRecords entries per /records answer: an engine exports them
# one by one within its ExportTimeout.
EXPORT_RECORDS_MAX = env_int("CACHEWEB_EXPORT_RECORDS_MAX", 500, minimum=1)
# A record asked for and not delivered is asked for again (of any engine) once the
# organization's export timeout has passed, or after this many seconds if longer.
EXPORT_RETRY_AFTER = env_int("CACHEWEB_EXPORT_RETRY_AFTER", 0, minimum=0)

# activity
# Days hourly activity rows are kept; older hours are rolled up into day rows (sums kept).
ACTIVITY_DAYS = env_int("CACHEWEB_ACTIVITY_DAYS", 90, minimum=1)

# retention
# Seconds between storage lifecycle passes (Celery beat); `manage.py gc` runs one now.
GC_INTERVAL = env_int("CACHEWEB_GC_INTERVAL", 3600, minimum=60)
# Seconds an unreferenced blob, a released mount snapshot or a failed upload is kept.
# Never less than BLOB_URL_LIFETIME plus the organization's export timeout: an engine
# uploads layer blobs on URLs valid that long and references them in /layers only
# afterwards. 0 (the default) means exactly that least value.
GC_GRACE = env_int("CACHEWEB_GC_GRACE", 0, minimum=0)
# Eviction, off at 0. Days after which a verified blob not used since (download URLs
# issued; verified_at when never used) is deleted.
EVICT_UNUSED_AFTER = env_int("CACHEWEB_EVICT_UNUSED_AFTER", 0, minimum=0)
# Bytes of verified blobs an organization may hold; above it the least recently used go.
ORG_STORAGE_LIMIT = env_int("CACHEWEB_ORG_STORAGE_LIMIT", 0, minimum=0)
# (Both are defaults: an organization's storage policy, set by its maintainers, overrides them.)

# audit
# Days audit log entries and storage lifecycle pass records are kept (pruned daily).
AUDIT_DAYS = env_int("CACHEWEB_AUDIT_DAYS", 365, minimum=1)
