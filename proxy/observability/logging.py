"""Loguru set-up: one sink (text or JSON lines), optional rotated file, redaction of secrets,
and the standard library's logging (uvicorn, aiohttp, asyncio...) routed into it."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from traceback import format_exception
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from proxy.config import LoggingConfig

if TYPE_CHECKING:
    from loguru import Record

_TOKEN_PATTERNS = (
    r"sk-[A-Za-z0-9_\-]{6,}",
    r"hf_[A-Za-z0-9]{6,}",
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{6,}",
)
MASK = "***"
_TEXT_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <7}</level> | {message}"
)


class Redactor:
    """Masks configured secrets and anything shaped like an API key."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        literal = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        parts = [re.escape(s) for s in literal] + list(_TOKEN_PATTERNS)
        self._pattern = re.compile("|".join(f"(?:{p})" for p in parts))

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text)


def configure_logging(config: LoggingConfig, redactor: Redactor) -> None:
    logger.remove()
    redact = redactor if config.redact else None

    def patch(record: Record) -> None:
        scrub = redact or str
        record["message"] = scrub(record["message"])
        if record["exception"] is not None:
            kind, value, trace = record["exception"]
            record["extra"]["_trace"] = scrub("".join(format_exception(kind, value, trace)))
            record["exception"] = None
        if config.json:
            record["extra"]["_json"] = _json_line(record)

    def log_format(record: Record) -> str:
        if config.json:
            return "{extra[_json]}\n"
        trace = "{extra[_trace]}" if "_trace" in record["extra"] else ""
        return _TEXT_FORMAT + "\n" + trace

    common: dict[str, Any] = {
        "level": config.level,
        "format": log_format,
        "backtrace": False,
        "diagnose": False,
    }
    logger.configure(patcher=patch)
    logger.add(sys.stderr, colorize=False if config.json else None, **common)
    if config.file:
        logger.add(config.file, rotation="50 MB", retention=5, colorize=False, **common)
    # The standard library's level follows ours: a lower root level would switch on
    # libraries' trace paths (uvicorn wraps the app in a per-message logger below TRACE).
    std_level = logging.getLevelName("DEBUG" if config.level == "TRACE" else config.level)
    logging.basicConfig(handlers=[_InterceptHandler()], level=std_level, force=True)
    for name in ("uvicorn", "uvicorn.error", "aiohttp", "asyncio", "litestar", "httpx"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # one line per file event


def _json_line(record: Record) -> str:
    fields: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "message": record["message"],
    }
    if "_trace" in record["extra"]:
        fields["traceback"] = record["extra"]["_trace"]
    fields.update((k, v) for k, v in record["extra"].items() if not k.startswith("_"))
    return msgspec.json.encode(fields).decode()


class _InterceptHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())
