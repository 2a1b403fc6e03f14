"""Stepwise settings: embedded defaults (SQLite, in-memory channel layer, filesystem broker),
PostgreSQL and Redis when DATABASE_URL / REDIS_URL are set, hardened when STEPWISE_ENV=production."""

import ipaddress
import os
import warnings
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("STEPWISE_VAR_DIR", BASE_DIR / ".var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

PRODUCTION = os.environ.get("STEPWISE_ENV", "development") == "production"
DEBUG = os.environ.get("DJANGO_DEBUG", "0" if PRODUCTION else "1") == "1"

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when STEPWISE_ENV=production")
    SECRET_KEY = "dev-only-insecure-key-never-used-in-production-0123456789abcdefghijklmnop"

# Signs ledger entries and the chain head kept outside the table (ledger/anchor.py). Keep it out
# of the database's reach: whoever holds it and the table can forge the ledger.
LEDGER_ANCHOR_KEY = os.environ.get("STEPWISE_LEDGER_ANCHOR_KEY", "")
if not LEDGER_ANCHOR_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured(
            "STEPWISE_LEDGER_ANCHOR_KEY must be set when STEPWISE_ENV=production"
        )
    LEDGER_ANCHOR_KEY = "dev-only-ledger-anchor-key"
LEDGER_ANCHOR_FILE = Path(
    os.environ.get("STEPWISE_LEDGER_ANCHOR_FILE", VAR_DIR / "ledger-anchor.json")
)

ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get(
        "DJANGO_ALLOWED_HOSTS", "" if PRODUCTION else "localhost,127.0.0.1,[::1],testserver"
    ).split(",")
    if h.strip()
]
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must be set when STEPWISE_ENV=production")
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "channels",
    "stepwise",
    "accounts",
    "live",
    "signals",
    "ledger",
    "rollouts",
    "incidents",
    "leadership",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "stepwise.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.ApiTokenMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "accounts.middleware.LoginOrTokenRequiredMiddleware",
]

ROOT_URLCONF = "stepwise.urls"
ASGI_APPLICATION = "stepwise.asgi.application"
WSGI_APPLICATION = None

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
                "accounts.context_processors.roles",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    # No persistent connections: under ASGI each request's sync part may run on a new thread, and
    # conn_max_age would leave one idle connection per thread until PostgreSQL refuses clients.
    # A psycopg pool per process shares a few connections instead.
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"].setdefault("OPTIONS", {}).update(
            {
                "connect_timeout": 5,
                # Server-side binding lets psycopg prepare a statement after its 5th run on a
                # pooled connection; the token and permission joins spent more time in
                # PostgreSQL's planner than executing (bench/RESULTS.md). Not behind PgBouncer
                # in transaction mode, which cannot keep prepared statements.
                "server_side_binding": True,
                "prepare_threshold": 5,
                "pool": {
                    "min_size": 1,
                    "max_size": int(os.environ.get("STEPWISE_DB_POOL_MAX", "16")),
                    # A request waits this long for a connection, then answers 503 with
                    # Retry-After (stepwise/views.py), instead of queueing without bound.
                    "timeout": float(os.environ.get("STEPWISE_DB_POOL_TIMEOUT", "5")),
                },
            }
        )
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "stepwise.sqlite3",
            # IMMEDIATE takes the write lock at BEGIN, so two writers queue instead of one failing
            # with "database is locked" when its read lock cannot be upgraded.
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"}
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
# Lets several Stepwise installations (or test servers) share one Redis without reading each
# other's tasks and events.
REDIS_PREFIX = os.environ.get("STEPWISE_REDIS_PREFIX", "stepwise")
LEDGER_ANCHOR_CACHE_KEY = "ledger:anchor"
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "capacity": 1500,
                "expiry": 30,
                "prefix": f"{REDIS_PREFIX}:asgi",
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": f"{REDIS_PREFIX}:cache",
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# Consumers re-read their streams from the database this often. With the in-memory layer this is
# how events written by another process (a Celery worker) reach the browser; with Redis it only
# closes gaps from lost group messages.
LIVE_POLL_SECONDS = float(os.environ.get("STEPWISE_LIVE_POLL_SECONDS", "15" if REDIS_URL else "1"))
# Each live stream keeps its newest events for replay (what was drawn, never the HTML).
LIVE_EVENTS_KEPT = int(os.environ.get("STEPWISE_LIVE_EVENTS_KEPT", "1000"))

# Celery: Redis in production; the kombu filesystem transport on a laptop, so a separate worker
# process works with nothing installed.
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": 3600,
        "global_keyprefix": f"{REDIS_PREFIX}:",
    }
else:
    _broker_dir = Path(os.environ.get("STEPWISE_BROKER_DIR", VAR_DIR / "broker"))
    (_broker_dir / "control").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
# A breaching sample's evaluation must not wait behind routine ones: it goes to its own queue,
# which workers poll first (Redis: "priority" order; rollouts.tasks.task_route picks the queue).
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = (Queue("urgent", routing_key="urgent"), Queue("celery", routing_key="celery"))
CELERY_TASK_ROUTES = ("rollouts.tasks.task_route",)
if REDIS_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS["queue_order_strategy"] = "priority"
# Celery's Django fixup closes the database connection around every task; reusing it takes
# ~12 ms off each evaluation (bench/RESULTS.md). Connections are still recycled after this many.
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# How often beat looks for verifications whose interval is up: the finest interval a step can use.
VERIFICATION_TICK_SECONDS = float(os.environ.get("STEPWISE_VERIFICATION_TICK_SECONDS", "2"))
CELERY_BEAT_SCHEDULE = {
    "worker-heartbeat": {"task": "stepwise.tasks.worker_heartbeat", "schedule": 10.0},
    "verifications-tick": {
        "task": "rollouts.tasks.verifications_tick",
        "schedule": VERIFICATION_TICK_SECONDS,
    },
    # SLOs roll up whole minutes; twice a minute keeps them at most ~50 s behind.
    "slos-tick": {"task": "signals.tasks.slos_tick", "schedule": 30.0},
}
# `./bin/run` feeds the demo plan's metrics (stepwise/demo.py) so its verifications have data.
DEMO_TRAFFIC_SECONDS = 10
if os.environ.get("STEPWISE_DEMO_TRAFFIC") == "1":
    CELERY_BEAT_SCHEDULE["demo-traffic"] = {
        "task": "stepwise.tasks.demo_traffic",
        "schedule": float(DEMO_TRAFFIC_SECONDS),
    }
# Retries a metric source may cost per minute across all workers (the cache is shared through
# Redis; on a laptop it is per worker process) before failing evaluations count as errors.
SOURCE_RETRY_BUDGET_PER_MINUTE = int(os.environ.get("STEPWISE_SOURCE_RETRY_BUDGET", "30"))
WORKER_HEARTBEAT_MAX_AGE_SECONDS = 60
# The thrash detector (rollouts/thrash.py): more than THRASH_ADAPTS adapt decisions within
# THRASH_DAYS days, or a kill within THRASH_KILL_AFTER_PERSIST_DAYS of a persist, flags a plan.
THRASH_ADAPTS = int(os.environ.get("STEPWISE_THRASH_ADAPTS", "3"))
THRASH_DAYS = float(os.environ.get("STEPWISE_THRASH_DAYS", "14"))
# A call reversed and then restored within this many hours is a flip-flop.
THRASH_REVERSAL_HOURS = float(os.environ.get("STEPWISE_THRASH_REVERSAL_HOURS", "24"))
THRASH_KILL_AFTER_PERSIST_DAYS = float(
    os.environ.get("STEPWISE_THRASH_KILL_AFTER_PERSIST_DAYS", "7")
)

# Who may scrape /metrics without a token: addresses or networks, comma-separated (empty: only
# tokens with the metrics:read scope). The direct peer's address: behind a proxy on this host,
# the proxy's (see docs/operations.md).
try:
    METRICS_ALLOW_NETWORKS = [
        ipaddress.ip_network(part.strip(), strict=False)
        for part in os.environ.get("STEPWISE_METRICS_ALLOW_IPS", "127.0.0.0/8,::1").split(",")
        if part.strip()
    ]
except ValueError as exc:
    raise ImproperlyConfigured(f"STEPWISE_METRICS_ALLOW_IPS: {exc}") from exc

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "portfolio"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION

if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = os.environ.get("DJANGO_SECURE_SSL_REDIRECT", "1") == "1"
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# WhiteNoise hands Django a sync iterator; under ASGI that only costs a thread hop for static files.
warnings.filterwarnings(
    "ignore", message="StreamingHttpResponse must consume synchronous iterators"
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "stepwise.logging.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": os.environ.get("STEPWISE_LOG_FORMAT", "json" if PRODUCTION else "text"),
        }
    },
    "filters": {"client_error": {"()": "stepwise.logging.ClientErrorWithoutTraceback"}},
    "root": {"handlers": ["console"], "level": os.environ.get("STEPWISE_LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's default config gives "django" its own console handler (DEBUG only) and it
        # also propagates to root: every django.* line was printed twice in development.
        "django": {"handlers": [], "level": "INFO"},
        "django.request": {"filters": ["client_error"]},
        "django.db.backends": {"level": "WARNING"},
    },
}
