"""Settings for the test suite: the production module, with a private scratch folder per test run."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-deployment-0123456789-abcdefghij")

from config.settings import *  # noqa: F403
from config.settings import CELERY_BROKER_TRANSPORT_OPTIONS, CELERY_BROKER_URL, STORAGES

VAR_DIR = Path(tempfile.mkdtemp(prefix="fracture-review-test-"))
MEDIA_ROOT = VAR_DIR / "media"
STORAGES = {**STORAGES, "default": {**STORAGES["default"], "OPTIONS": {"location": str(MEDIA_ROOT)}}}
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **CELERY_BROKER_TRANSPORT_OPTIONS,
        "data_folder_in": str(VAR_DIR / "broker" / "queue"),
        "data_folder_out": str(VAR_DIR / "broker" / "queue"),
        "processed_folder": str(VAR_DIR / "broker" / "processed"),
        "control_folder": str(VAR_DIR / "broker" / "control"),
        "store_processed": False,
    }
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing folder
WHITENOISE_USE_FINDERS = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Browser tests talk plain HTTP to a live server; production keeps secure cookies.
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
# Login throttling is exercised by its own tests, which switch it on.
AXES_ENABLED = False
CLASSIFIER_WARM_UP = False
# The suite's query budgets count the application's own queries; a database cache would add its four per
# throttled request. The shared (database) cache itself is exercised across real processes with the
# production settings by tests/security/test_shared_cache.py.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
