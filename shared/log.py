"""JSON logs on stderr with the reference's LOG_LEVEL names, and request ids.

`setup_logging(level)` once per process; `get_logger(name)` everywhere;
`log_event(logger, level, message, **fields)` writes one JSON line.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time

TRACE = 5
logging.addLevelName(TRACE, "TRACE")
_LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "error": logging.ERROR, "fatal": logging.CRITICAL}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": round(record.created * 1000), "level": record.levelname.lower(),
                 "name": record.name, "message": record.getMessage(), "pid": os.getpid()}
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["stack"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str = "info") -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # Third-party chatter only at debug/trace (DEBUG=socket.io* equivalent).
    noisy = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in ("socketio", "engineio", "aiohttp.access", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(noisy if root.level > TRACE else TRACE)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def log_event(logger: logging.Logger, level: int, message: str, **fields: object) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"fields": fields})


def new_request_id() -> str:
    """16 upper-case hex chars, the shape of AWS's x-amz-request-id."""
    return os.urandom(8).hex().upper()


def monotonic_ms() -> float:
    return time.monotonic() * 1000
