"""Logging with the seed's detailed format, a file and a stream handler, optional JSON, and redaction.

Every secret the process knows (agent secret, enrollment token) is registered with `redact()` and
replaced by `***` in every record before any handler sees it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

SEED_FORMAT = "%(asctime)s - %(name)s - [%(levelname)s] - [%(funcName)s:%(lineno)d] - %(message)s"
DEFAULT_LOG_FILE = "spot_optimizer_agent.log"

_SECRETS: set[str] = set()


def redact(secret: str | None) -> None:
    """Never let `secret` reach a log line."""
    if secret and len(secret) >= 6:
        _SECRETS.add(secret)


def scrub(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            message = scrub(record.getMessage())
            record.msg, record.args = message, None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = scrub(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
            "level": record.levelname,
            "func": f"{record.funcName}:{record.lineno}",
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc"] = record.exc_text
        return json.dumps(data)


def setup_logging(level: str = "DEBUG", log_file: Path | None = Path(DEFAULT_LOG_FILE), json_format: bool = False,
                  stream: bool = True) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter: logging.Formatter = JsonFormatter() if json_format else logging.Formatter(SEED_FORMAT)
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    if stream:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    # Third-party wire chatter at DEBUG would drown our own lines (and botocore logs request bodies).
    for noisy in ("botocore", "boto3", "urllib3", "httpcore", "httpx", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
