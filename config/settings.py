"""Fracture Review settings: one module, every deployment choice read from the environment.

With no environment at all this is the embedded default: SQLite, a Celery broker kept in files under
var/, images under var/media. Production sets DATABASE_URL (PostgreSQL), CELERY_BROKER_URL (Redis),
SECRET_KEY and ALLOWED_HOSTS; see README.md for the full list.

Longer than 400 lines on purpose: Django reads one settings module, and an operator reads every choice
the environment can make in one list, section by section; split, the list would be scattered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from config.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
    installation_secret_key,
    weak_secret_key_reason,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("FRACTURE_REVIEW_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", False)

# The embedded default (SQLite, one machine) keeps a key generated for this installation in var/; a
# deployment with its own database sets SECRET_KEY (every web process and worker must share it).
_EMBEDDED = env_str("DATABASE_URL", "sqlite:").startswith("sqlite:")
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not _EMBEDDED:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DATABASE_URL names a server (for example: "
            "python -c 'import secrets; print(secrets.token_urlsafe(64))')"
        )
    SECRET_KEY = installation_secret_key(VAR_DIR / "secret_key")
elif not DEBUG and (_weak := weak_secret_key_reason(SECRET_KEY)):
    raise ImproperlyConfigured(f"SECRET_KEY is too weak for DJANGO_DEBUG off: {_weak}")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
if not DEBUG and "*" in ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must list this server's names, not '*', with DJANGO_DEBUG off")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # Django's admin, opened to the admin role (group) instead of the is_staff flag.
    "radiology.admin_site.FractureReviewAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "radiology",
    # The process layer: Celery tasks and `manage.py runapp` (which starts web + worker processes).
    "worker",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.MethodNotAllowedPageMiddleware",
    # Last, as django-axes asks: it must see the result of authentication.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
                "radiology.context_processors.roles",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
_default_database_url = f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
try:
    _database = dj_database_url.parse(
        env_str("DATABASE_URL", _default_database_url),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        conn_health_checks=True,
    )
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
if _database["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the worker write to one SQLite file: WAL lets readers and a writer overlap,
    # IMMEDIATE transactions and a timeout turn lock contention into waiting instead of errors.
    _database["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    _database["CONN_MAX_AGE"] = 0
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth, sessions, login throttling --------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "radiology:queue"
LOGOUT_REDIRECT_URL = "login"

# Sessions end after this much inactivity (each request renews the clock).
SESSION_COOKIE_AGE = env_int("SESSION_IDLE_TIMEOUT_SECONDS", 30 * 60, minimum=60)
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True

AXES_ENABLED = env_bool("AXES_ENABLED", True)
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_float("LOGIN_COOLOFF_HOURS", 0.25, minimum=0.0)
# Locked per username + address pair (a list inside the list: both together). Either one alone let five
# typos behind the hospital's proxy lock everyone out, or anyone lock out a named colleague.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# Guessing at one account from many addresses: after this many failures within the cool-off, each attempt
# waits a doubling pause capped at the maximum (radiology/login_throttle.py); never a lockout.
LOGIN_ACCOUNT_BACKOFF_AFTER = env_int("LOGIN_ACCOUNT_BACKOFF_AFTER", 10, minimum=1)
LOGIN_ACCOUNT_BACKOFF_MAX_SECONDS = env_int("LOGIN_ACCOUNT_BACKOFF_MAX_SECONDS", 60, minimum=1)
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

# --- Security headers -------------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# No inline script anywhere: every script is a vendored or project file under /static/.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)

# --- Internationalisation ---------------------------------------------------------------------------
LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files and stored images ----------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
# Radiographs are never served by URL: MEDIA_URL is unused and an authenticated view streams them.
# STORAGE_BACKEND names any django-storages backend (configured by its own variables) for shared object
# storage when workers run on several machines.
_storage_backend = env_str("STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage")
STORAGES: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": _storage_backend,
        "OPTIONS": {"location": str(MEDIA_ROOT)} if _storage_backend.endswith("FileSystemStorage") else {},
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- Upload limits ---------------------------------------------------------------------------------
UPLOAD_MAX_FILE_BYTES = env_int("UPLOAD_MAX_FILE_BYTES", 40 * 1024 * 1024, minimum=1024)
UPLOAD_MAX_PIXELS = env_int("UPLOAD_MAX_PIXELS", 60_000_000, minimum=1)
UPLOAD_MIN_SIDE = env_int("UPLOAD_MIN_SIDE", 32, minimum=1)
UPLOAD_MAX_FILES_PER_STUDY = env_int("UPLOAD_MAX_FILES_PER_STUDY", 20, minimum=1)
# Django rejects a request body larger than this before any view runs.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("UPLOAD_MAX_REQUEST_BYTES", 200 * 1024 * 1024, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = 500

# --- Reading workflow ------------------------------------------------------------------------------
# Blinded first read for readers who have not chosen for themselves: the reader's own call first, then
# the model's band and boxes.
BLINDED_READ_DEFAULT = env_bool("BLINDED_READ_DEFAULT", False)
# How long "being read by" marks a study after the reader's page last checked in.
READING_MARKER_SECONDS = env_int("READING_MARKER_SECONDS", 300, minimum=30)

# --- Classifier and worker -------------------------------------------------------------------------
CLASSIFIER_MODEL = env_str("CLASSIFIER_MODEL", "")  # empty: the shipped model in models/
# Radiographs per forward pass (the worker fills a batch with what is queued). On the 2-core CPU box,
# 8 / 16 / 32 reach 56 / 62 / 69 % of the raw forward pass and 1.0 / 1.3 / 1.8 GB of worker memory
# (docs/performance.md); on a GPU, larger batches pay off more.
CLASSIFIER_MAX_BATCH = env_int("CLASSIFIER_MAX_BATCH", 16, minimum=1)
# TensorFlow threads per worker process (0: TensorFlow decides). With N processes on C cores, C/N.
CLASSIFIER_CPU_THREADS = env_int("CLASSIFIER_CPU_THREADS", 0, minimum=0)
# Load the model as soon as a worker process starts, so the first radiograph does not wait for it.
CLASSIFIER_WARM_UP = env_bool("CLASSIFIER_WARM_UP", True)
# A radiograph RUNNING longer than this is assumed lost with its worker and is sent again.
CLASSIFY_RUNNING_TIMEOUT_SECONDS = env_int("CLASSIFY_RUNNING_TIMEOUT_SECONDS", 180, minimum=5)
# Claims of one radiograph that may all be lost (its worker died each time) before it is marked FAILED.
CLASSIFY_MAX_ATTEMPTS = env_int("CLASSIFY_MAX_ATTEMPTS", 3, minimum=1)
# A QUEUED radiograph whose message went out this long ago without being claimed is sent again.
CLASSIFY_RESEND_AFTER_SECONDS = env_int("CLASSIFY_RESEND_AFTER_SECONDS", 600, minimum=5)
SWEEP_INTERVAL_SECONDS = env_int("SWEEP_INTERVAL_SECONDS", 30, minimum=1)
# The reconciling sweep (radiology/services/reconcile.py): how often it runs, and how old a file without a
# row must be before it is deleted (longer than any upload request can take: its row is not committed yet).
RECONCILE_INTERVAL_SECONDS = env_int("RECONCILE_INTERVAL_SECONDS", 600, minimum=10)
RECONCILE_ORPHAN_GRACE_SECONDS = env_int("RECONCILE_ORPHAN_GRACE_SECONDS", 3600, minimum=300)

_broker_dir = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    # The embedded broker: messages are files in one folder shared by the web process and the worker.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # The worker looks for new message files this often (kombu's default, 1 s, was most of the
        # embedded upload-to-prediction latency); listing one small folder 10 times a second is free.
        "polling_interval": env_float("CELERY_BROKER_POLLING_INTERVAL", 0.1, minimum=0.01),
    }
    # kombu's file transport with one fix: a message appears in the queue whole or not at all (stock, a
    # worker polling mid-write read an empty file and stopped; worker/filesystem_transport.py).
    CELERY_BROKER_TRANSPORT = "worker.filesystem_transport:Transport"
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Unacknowledged messages come back after this long (acks_late): longer than the hard time limit.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
    # kombu's Redis transport with one fix: a worker whose broker restarts keeps running (stock, it stopped
    # with an AttributeError while closing the lost connection; worker/redis_transport.py).
    CELERY_BROKER_TRANSPORT = "worker.redis_transport:Transport"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The web process must not hang when the broker is down: the sweep re-sends what could not be sent. Its
# connection attempts are bounded by this timeout (kombu retries a connection for that long at most).
CELERY_BROKER_CONNECTION_TIMEOUT = env_float("CELERY_BROKER_CONNECTION_TIMEOUT", 2.0, minimum=0.1)
# Only the worker's consumer reads this: None, it waits for the broker as long as it takes (0 made a
# worker started, or reconnecting, while Redis was down exit at once, and the supervisor's back-off grew
# with each failed start, delaying the recovery after the broker came back).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_TASK_PUBLISH_RETRY = False
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CLASSIFY_SOFT_TIME_LIMIT_SECONDS", 90, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CLASSIFY_HARD_TIME_LIMIT_SECONDS", 120, minimum=2)
# Reserve as many messages as a batch holds. A message is a wake-up, not a claim on its radiograph (the
# worker claims rows in the database, whichever message woke it), so holding some keeps no work from
# another worker; and after a batch, its other radiographs' messages are answered from memory, back to
# back. With one at a time, each of those waited for the broker: on the embedded file broker a polling
# interval each, which capped the embedded worker at ~1 radiograph/s (docs/performance.md).
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int(
    "CELERY_WORKER_PREFETCH_MULTIPLIER", CLASSIFIER_MAX_BATCH, minimum=1
)
CELERY_TASK_DEFAULT_QUEUE = "maintenance"
CELERY_TASK_ROUTES = {"worker.tasks.classify_radiograph": {"queue": "inference"}}
CELERY_BEAT_SCHEDULE = {
    "sweep-stale-radiographs": {
        "task": "worker.tasks.sweep_stale_radiographs",
        "schedule": float(SWEEP_INTERVAL_SECONDS),
        # A sweep not started by the next one is dropped: while the worker is down or busy (a restart
        # loading the model) they piled up (186 in 6 minutes in bench/chaos.py), and each one re-sent its
        # QUEUED rows again once the worker came back: a flood of duplicate messages delaying recovery.
        "options": {"expires": float(SWEEP_INTERVAL_SECONDS)},
    },
    "purge-expired-idempotency-records": {
        "task": "worker.tasks.purge_expired_idempotency_records",
        "schedule": 3600.0,
    },
    "reconcile-storage": {
        "task": "worker.tasks.reconcile_storage",
        "schedule": float(RECONCILE_INTERVAL_SECONDS),
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's prefork pool with a fix for the blocking variant that the file broker uses: stock, a pool child
# killed while idle froze the embedded worker for good (worker/prefork.py). The Redis path is unchanged.
CELERY_WORKER_POOL = "worker.prefork:TaskPool"

# --- Cache ---------------------------------------------------------------------------------------------
# API throttles and the sign-in back-off count in the cache, so every web process must see the same one:
# Redis with CACHE_URL, otherwise a table in the database they already share (made by `migrate`).
# A per-process memory cache let 2 gunicorn workers accept 300 creating requests in 68 s against 120/min.
CACHE_URL = env_str("CACHE_URL", "")
CACHES: dict[str, dict[str, Any]]
if CACHE_URL.startswith(("redis://", "rediss://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
elif CACHE_URL:
    raise ImproperlyConfigured(f"CACHE_URL must be a redis:// URL or empty, got {CACHE_URL!r}")
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "fracture_review_cache",
            # Django's default (300 entries, then a third culled) would drop throttle histories at ~150 users.
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

# --- REST API ----------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "radiology.api.pagination.ApiPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {
        "user": env_str("API_THROTTLE_USER", "600/minute"),
        "submit": env_str("API_THROTTLE_SUBMIT", "120/minute"),
    },
    # Every API error is an RFC 9457 problem document (radiology/api/problems.py).
    "EXCEPTION_HANDLER": "radiology.api.errors.exception_handler",
}
API_PAGE_SIZE = env_int("API_PAGE_SIZE", 50, minimum=1)
API_MAX_PAGE_SIZE = env_int("API_MAX_PAGE_SIZE", 200, minimum=1)
# Checked from Content-Length before the body is read (Django itself bounds only non-file fields).
API_MAX_REQUEST_BYTES = env_int("API_MAX_REQUEST_BYTES", DATA_UPLOAD_MAX_MEMORY_SIZE, minimum=1024)
API_BATCH_MAX_STUDIES = env_int("API_BATCH_MAX_STUDIES", 50, minimum=1)
API_BATCH_MAX_FILES = env_int("API_BATCH_MAX_FILES", 200, minimum=1)
API_IDEMPOTENCY_TTL_HOURS = env_int("API_IDEMPOTENCY_TTL_HOURS", 24, minimum=1)
# An Idempotency-Key whose request has been "in progress" this long was lost with its process.
API_IDEMPOTENCY_STALE_SECONDS = env_int("API_IDEMPOTENCY_STALE_SECONDS", 300, minimum=10)
SPECTACULAR_SETTINGS = {
    "TITLE": "Fracture Review API",
    "DESCRIPTION": (
        "Submit radiographs for fracture triage, collect predictions and reviews. Authenticate with "
        "`Authorization: Token <key>` (`manage.py create_api_token USER`); the same roles as the web pages. "
        "Every error is an RFC 9457 problem (`/api/problems/{code}` explains each code); every creating POST "
        "takes an `Idempotency-Key`. A typical integration: POST a batch, poll it until every radiograph is "
        "predicted, read the studies' results (or the exports)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # In the order an integration meets them (the UI otherwise lists tags as their paths sort).
    "TAGS": [
        {"name": "batches", "description": "Submit several studies at once and follow their processing."},
        {"name": "studies", "description": "A patient's study: its radiographs, results and FHIR report."},
        {"name": "radiographs", "description": "One radiograph: its prediction, band, boxes and heatmap."},
        {"name": "reviews", "description": "Clinicians' confirmations, overrides and second reads."},
        {"name": "exports", "description": "Every result as CSV or JSON, for audit and analysis."},
        {"name": "problems", "description": "What each error code means."},
    ],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "radiology.api.schema.add_problem_responses",
    ],
    "ENUM_NAME_OVERRIDES": {
        "StudyStateEnum": "radiology.models.Study.State",
        "RadiographStatusEnum": "radiology.models.Radiograph.Status",
        "RadiographFormatEnum": "radiology.models.Radiograph.Format",
        "BodyRegionEnum": "radiology.models.BodyRegion",
        "LabelEnum": "radiology.models.Label",
        "SexEnum": "radiology.models.Sex",
        "ReviewDecisionEnum": "radiology.models.Review.Decision",
        "ReviewReasonEnum": "radiology.models.Review.Reason",
        "BatchItemOutcomeEnum": "radiology.models.BatchItem.Outcome",
        "NotAnalysedCodeEnum": "radiology.governance.models.GuardrailRefusal.Code",
    },
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "persistAuthorization": False, "displayOperationId": False},
}

# --- Logging -----------------------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"}},
    "filters": {"expected_refusals": {"()": "config.log_filters.ExpectedRefusalFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # 403 and 404 answers: one line each, no traceback (config/log_filters.py).
        "django.request": {"filters": ["expected_refusals"]},
        "django.security": {"filters": ["expected_refusals"]},
        "axes": {"level": "WARNING"},
        # Per-association and per-object chatter (DICOM networking, SR construction) stays out of the log.
        "pynetdicom": {"level": "WARNING"},
        "highdicom": {"level": "WARNING"},
    },
}

# --- Hospital integration: DICOM in (C-STORE listener, STOW-RS), results out (SR, Secondary Capture, FHIR)
# The listener (`manage.py dicom_listener`, also started by `manage.py runapp`): its AE title, where it
# listens, and which calling AE titles may send (empty: any).
DICOM_AE_TITLE = env_str("DICOM_AE_TITLE", "FRACTUREREVIEW")
if not 0 < len(DICOM_AE_TITLE) <= 16:
    raise ImproperlyConfigured("DICOM_AE_TITLE must be 1 to 16 characters")
DICOM_BIND_ADDRESS = env_str("DICOM_BIND_ADDRESS", "127.0.0.1")
DICOM_PORT = env_int("DICOM_PORT", 11112, minimum=0)
DICOM_ALLOWED_CALLING_AE_TITLES = env_list("DICOM_ALLOWED_CALLING_AE_TITLES", [])
# Association limits: concurrent associations, the largest PDU, and how long a silent peer is waited for.
DICOM_MAX_ASSOCIATIONS = env_int("DICOM_MAX_ASSOCIATIONS", 10, minimum=1)
DICOM_MAX_PDU_BYTES = env_int("DICOM_MAX_PDU_BYTES", 262_144, minimum=4096)
DICOM_NETWORK_TIMEOUT_SECONDS = env_float("DICOM_NETWORK_TIMEOUT_SECONDS", 60.0, minimum=1.0)
# One instance larger than this is refused (Out of Resources), as an upload larger than the file limit is.
DICOM_MAX_INSTANCE_BYTES = env_int("DICOM_MAX_INSTANCE_BYTES", UPLOAD_MAX_FILE_BYTES, minimum=1024)
# A study is complete, and is filed and classified, once no instance of it arrived for this long.
DICOM_QUIET_PERIOD_SECONDS = env_float("DICOM_QUIET_PERIOD_SECONDS", 10.0, minimum=0.0)
# How often arrivals and result deliveries are looked at (the listener's own loop and the beat task).
DICOM_POLL_INTERVAL_SECONDS = env_float("DICOM_POLL_INTERVAL_SECONDS", 2.0, minimum=0.1)
# Studies received over DICOM are recorded as uploaded by this account (created without a password).
DICOM_SYSTEM_USERNAME = env_str("DICOM_SYSTEM_USERNAME", "dicom-listener")
# Where results go: "AE_TITLE@host:port" (C-STORE) or an http(s) DICOMweb base URL (STOW-RS to
# <url>/studies). Empty: no DICOM results are sent (FHIR is always available through the API).
DICOM_DESTINATION = env_str("DICOM_DESTINATION", "")
# HTTP basic credentials "user:password" for a STOW-RS destination, if it needs them.
DICOM_DESTINATION_CREDENTIALS = env_str("DICOM_DESTINATION_CREDENTIALS", "")
DICOM_DELIVERY_MAX_ATTEMPTS = env_int("DICOM_DELIVERY_MAX_ATTEMPTS", 5, minimum=1)
DICOM_DELIVERY_TIMEOUT_SECONDS = env_float("DICOM_DELIVERY_TIMEOUT_SECONDS", 30.0, minimum=1.0)
# A PENDING delivery whose task has not reported for this long is sent again (its worker died).
DICOM_DELIVERY_RESEND_AFTER_SECONDS = env_int("DICOM_DELIVERY_RESEND_AFTER_SECONDS", 300, minimum=5)
DICOM_INSTITUTION_NAME = env_str("DICOM_INSTITUTION_NAME", "")
CELERY_BEAT_SCHEDULE["dicom-housekeeping"] = {
    "task": "worker.dicom_tasks.dicom_housekeeping",
    "schedule": DICOM_POLL_INTERVAL_SECONDS,
}

# --- Model governance: shadow versions, the promotion gate, drift alerts ------------------------------
# Shadow versions predict on their own queue, consumed by their own worker process, so they never delay
# the active prediction (worker/commands.py: shadow_worker_command).
CELERY_TASK_ROUTES["worker.governance_tasks.shadow_predict"] = {"queue": "shadow"}
# The Models page's comparison (a paired bootstrap: seconds at scale) is computed by that low-priority worker
# too, asked for by the page when the evidence changed and by beat; the page shows the last one stored.
CELERY_TASK_ROUTES["worker.governance_tasks.refresh_comparisons"] = {"queue": "shadow"}
GOVERNANCE_COMPARISON_REFRESH_SECONDS = env_int("GOVERNANCE_COMPARISON_REFRESH_SECONDS", 600, minimum=10)
CELERY_BEAT_SCHEDULE["refresh-comparisons"] = {
    "task": "worker.governance_tasks.refresh_comparisons",
    "schedule": GOVERNANCE_COMPARISON_REFRESH_SECONDS,
}
# A shadow version is promoted only with at least this many reviewed cases read by both versions, and only
# if the lower bound of the 95 % interval of the paired AUC difference (shadow - active) is above the margin.
GOVERNANCE_PROMOTION_MIN_REVIEWED = env_int("GOVERNANCE_PROMOTION_MIN_REVIEWED", 200, minimum=1)
GOVERNANCE_NONINFERIORITY_MARGIN = env_float("GOVERNANCE_NONINFERIORITY_MARGIN", -0.02)
# Label-free drift, checked daily per site/device over the last DRIFT_WINDOW_DAYS: a population stability
# index above DRIFT_PSI_THRESHOLD (score, intensity or size distribution against the card's validation
# reference), or a share of radiographs not analysed above DRIFT_NOT_ANALYSED_MAX, raises an alert.
GOVERNANCE_DRIFT_WINDOW_DAYS = env_int("GOVERNANCE_DRIFT_WINDOW_DAYS", 7, minimum=1)
GOVERNANCE_DRIFT_MIN_SAMPLE = env_int("GOVERNANCE_DRIFT_MIN_SAMPLE", 50, minimum=1)
GOVERNANCE_DRIFT_PSI_THRESHOLD = env_float("GOVERNANCE_DRIFT_PSI_THRESHOLD", 0.25, minimum=0.0)
GOVERNANCE_DRIFT_NOT_ANALYSED_MAX = env_float("GOVERNANCE_DRIFT_NOT_ANALYSED_MAX", 0.10, minimum=0.0)
GOVERNANCE_DRIFT_HOUR_UTC = env_int("GOVERNANCE_DRIFT_HOUR_UTC", 2, minimum=0)
CELERY_BEAT_SCHEDULE["refresh-monitoring"] = {
    "task": "worker.governance_tasks.refresh_monitoring",
    "schedule": crontab(hour=GOVERNANCE_DRIFT_HOUR_UTC, minute=0),
}
CELERY_BEAT_SCHEDULE["check-drift"] = {
    "task": "worker.governance_tasks.check_drift",
    "schedule": crontab(hour=GOVERNANCE_DRIFT_HOUR_UTC, minute=15),
}
# Alerts go to every user in the admin role with an e-mail address, through Django's e-mail backend
# (the console in development: `make run` prints them).
_EMAIL_DEFAULT = "console" if DEBUG else "smtp"
EMAIL_BACKEND = env_str("EMAIL_BACKEND", f"django.core.mail.backends.{_EMAIL_DEFAULT}.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "fracture-review@localhost")

# Celery's per-run lines for the beat tasks that run more than once a minute stay out of the log; the tasks
# log their own line when they act (config/log_filters.py). Placed last: every schedule is known here.
LOGGING["filters"]["routine_tasks"] = {
    "()": "config.log_filters.RoutineTaskFilter",
    "tasks": sorted(
        str(entry["task"])
        for entry in CELERY_BEAT_SCHEDULE.values()
        if isinstance(entry["schedule"], float | int) and entry["schedule"] < 60
    ),
}
for _celery_logger in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
    LOGGING["loggers"][_celery_logger] = {"filters": ["routine_tasks"]}
