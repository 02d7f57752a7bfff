"""Regis settings: everything comes from the environment, with working defaults.

The defaults give the embedded setup (SQLite file, in-memory channel layer, no Redis);
docker-compose.yml sets DATABASE_URL and REDIS_URL for the production shape.
"""
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name, default=""):
    return os.environ.get(name, default)


def envbool(name, default="0"):
    value = env(name, default).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean, got {value!r}")


def envint(name, default):
    value = env(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None


def envlist(name, default):
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


DATA_DIR = Path(env("REGIS_DATA_DIR", str(BASE_DIR / "var")))

SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    # The embedded default keeps a generated key beside its database so that nonces and
    # sessions survive a restart; production sets SECRET_KEY explicitly.
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        import secrets

        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text().strip()

DEBUG = envbool("DEBUG", "0")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "*")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
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
    "channels",
    "oauth2_provider",
    "registrar",
    "webui",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "pbx.urls"

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

WSGI_APPLICATION = "pbx.wsgi.application"
ASGI_APPLICATION = "pbx.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{DATA_DIR / 'regis.sqlite3'}"),
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while the SIP worker commits; IMMEDIATE transactions
    # avoid the deadlock-prone read-then-upgrade pattern when two processes write.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
if env("TEST_DATABASE_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
# Static files come from the installed packages and the repo (no CDN); WhiteNoise serves
# them straight from there, so the embedded default needs no collectstatic step.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_AUTOREFRESH = DEBUG

REDIS_URL = env("REDIS_URL")
LIVE_RELAY_SOCKET = ""
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
    CELERY_BROKER_URL = REDIS_URL
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # Other processes reach the web process's in-memory layer through this socket
    # (registrar.live, webui.relay).
    LIVE_RELAY_SOCKET = env("LIVE_RELAY_SOCKET", str(DATA_DIR / "live.sock"))
    CELERY_TASK_ALWAYS_EAGER = True
    CELERY_BROKER_URL = "memory://localhost/"
CELERY_TASK_IGNORE_RESULT = True

REST_FRAMEWORK = {
    "DEFAULT_PERMISSION_CLASSES": ["registrar.api.permissions.ReadOrAdminWrite"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Regis API",
    "DESCRIPTION": "Extensions, live registrations, failed authentication attempts and soft parameters of "
                   "the Regis SIP registrar. Authenticate with `Authorization: Token <key>`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The docs page's JavaScript and CSS come from an installed package, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Extensions and trunks both have a "state", with different choices: a name for each.
    "ENUM_NAME_OVERRIDES": {"StateEnum": ["online", "failing", "offline"],
                            "TrunkStateEnum": "registrar.models.TrunkState"},
}

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

# --- SIP ----------------------------------------------------------------------------
# The domain phones register to; it is also the digest realm, so HA1 hashes are per domain.
SIP_DOMAIN = env("SIP_DOMAIN", "regis.local")
SIP_REALM = env("SIP_REALM", SIP_DOMAIN)
SIP_LISTEN = envlist("SIP_LISTEN", "udp:0.0.0.0:5060,tcp:0.0.0.0:5060,tls:0.0.0.0:5061")


def tunnel_address_for(listen):
    """runsip's first TCP listener, as the web process reaches it (a wildcard host: loopback)."""
    for text in listen:
        transport, _, rest = text.partition(":")
        host, _, port = rest.rpartition(":")
        if transport == "tcp" and port.isdigit():
            host = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(host, host)
            return f"{host}:{port}"
    return "127.0.0.1:5060"


# Where the web process opens each browser websocket's tunnel to runsip (calls from and to
# browsers go through it; registrar.worker.tunnel): HOST:PORT of a runsip TCP listener.
SIP_TUNNEL_ADDRESS = env("SIP_TUNNEL_ADDRESS", "") or tunnel_address_for(SIP_LISTEN)
# Other names and addresses the Request-URI of a REGISTER may carry for this registrar.
SIP_ALIASES = envlist("SIP_ALIASES", "")
# Group commit: how many REGISTERs at most share one database transaction.
SIP_COMMIT_BATCH = envint("SIP_COMMIT_BATCH", 500)
# TCP bounds: a started message must complete within this many seconds; an idle flow
# closes after this many; one source address may hold this many connections.
SIP_TCP_MESSAGE_TIMEOUT = envint("SIP_TCP_MESSAGE_TIMEOUT", 10)
SIP_TCP_IDLE_TIMEOUT = envint("SIP_TCP_IDLE_TIMEOUT", 900)
SIP_TCP_MAX_PER_SOURCE = envint("SIP_TCP_MAX_PER_SOURCE", 100)
# The address runsip puts in the Via of requests it sends itself (qualify OPTIONS) when it
# listens on a wildcard address (0.0.0.0, ::); empty: 127.0.0.1.
SIP_ADVERTISED_HOST = env("SIP_ADVERTISED_HOST", "")
# T1 of the requests runsip sends (qualify pings, NOTIFYs), in milliseconds: retransmissions
# over UDP start at T1 and it gives up after 64*T1 (RFC 3261 §17.1.2.2). Tests lower it.
SIP_TIMER_T1_MS = envint("SIP_TIMER_T1_MS", 500)
# TLS for SIP (tls: listeners) and for the web process's wss: PEM certificate chain and key.
# Unset, a self-signed certificate is generated into DATA_DIR/tls on first use and reused.
SIP_TLS_CERT = env("SIP_TLS_CERT")
SIP_TLS_KEY = env("SIP_TLS_KEY")
if bool(SIP_TLS_CERT) != bool(SIP_TLS_KEY):
    raise ImproperlyConfigured("SIP_TLS_CERT and SIP_TLS_KEY must be set together")
# The port `manage.py serve` also serves HTTPS and wss:// on with that certificate (0: off).
WEB_TLS_PORT = envint("WEB_TLS_PORT", 8443)

LOG_FORMAT = env("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "registrar.jsonlog.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    # "Task ... succeeded" for every job run: JobRun records them (manage.py jobs list).
    "loggers": {"celery.app.trace": {"level": "WARNING"}},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

CELERY_BEAT_SCHEDULE = {
    name: {"task": "registrar.tasks.run_job", "args": (name,), "schedule": float(seconds)}
    for name, seconds in (
        ("send_alerts", 30), ("purge_expired_bindings", 60), ("check_failure_spikes", 60),
        ("check_stopped_registering", 60), ("prune_trace", 300), ("prune_auth_attempts", 3600),
        ("prune_operations_history", 3600), ("prune_parameter_audit", 86400), ("prune_hourly_stats", 86400),
        ("end_stale_calls", 3600),
    )
}

# --- operations -------------------------------------------------------------------------
METRICS_TOKEN = env("METRICS_TOKEN")
EMAIL_HOST = env("EMAIL_HOST")
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", "0")
EMAIL_USE_SSL = envbool("EMAIL_USE_SSL", "0")
EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST
                    else "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", f"regis@{SIP_DOMAIN}")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Outbound trunks (registrar/worker/trunks.py): the first retry after a failure, in
# seconds (it doubles up to 30 minutes); whether a sips:/TLS upstream's certificate is
# verified against the system's CAs; the key trunk passwords are encrypted with
# (empty = derived from SECRET_KEY).
TRUNK_BACKOFF_FIRST = envint("TRUNK_BACKOFF_FIRST", 30)
TRUNK_TLS_VERIFY = envbool("TRUNK_TLS_VERIFY", "1")
TRUNK_SECRET_KEY = env("TRUNK_SECRET_KEY", "")

# --- OAuth 2.0 (issue 6) ------------------------------------------------------------------
# Regis as its own authorization server (django-oauth-toolkit at /o/): phones' apps get
# tokens with the password grant using the extension's number and SIP password (checked
# against its HA1 by registrar.oauth.ExtensionPasswordValidator); the "sip" scope is what
# SIP bearer authentication may require, "introspection" lets a token call /o/introspect/.
OAUTH2_PROVIDER = {
    "SCOPES": {"sip": "Register and call as the extension", "introspection": "Introspect tokens"},
    "DEFAULT_SCOPES": ["sip"],
    "ACCESS_TOKEN_EXPIRE_SECONDS": envint("OAUTH_TOKEN_SECONDS", 3600),
    "OAUTH2_VALIDATOR_CLASS": "registrar.oauth.ExtensionPasswordValidator",
}
# How long a positive SIP bearer verdict is reused at most (it never outlives the token):
# the bound on how late a revoked token is noticed.
OAUTH_CACHE_SECONDS = envint("OAUTH_CACHE_SECONDS", 30)
