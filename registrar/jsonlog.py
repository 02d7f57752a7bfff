"""JSON-lines logging (LOG_FORMAT=json): one object per record, for log shippers.

Keys: ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``event`` (the
formatted message), then whatever the call passed in ``extra`` — by convention
``aor``, ``reason``, ``source``, ``extension``, ``job`` — and ``exc`` with the
traceback when there is one::

    log.info("registered", extra={"aor": "sip:1001@regis.local", "source": "192.0.2.1:5060"})

Plain standard library: the logging configuration loads it before Django's apps.
"""
import json
import logging
from datetime import datetime, timezone

# The attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
