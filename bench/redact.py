"""Secrets out of logs: one function every echo point calls, and a logging formatter that calls it.

A database URL with a password (`--history postgresql://user:pw@host/db`), a token flag
(`--token X`), an environment-style assignment (`HF_TOKEN=...`) or a bearer header would
otherwise land in `runner.log`, a worker's log or a CI job's output, which are kept and shared.
The patterns err towards masking: a masked harmless value costs nothing, a leaked password does.
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"

# scheme://userinfo@host: the userinfo runs to the last `@` before the path, so a password
# holding an unescaped `@` is masked whole.
_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#@]*(?:@[^\s/?#@]*)*)@"
)
_SECRET_WORD = r"(?:token|password|passwd|pwd|secret|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)"
# `--token X`, `--token=X`, `--db-password X`: a flag whose name ends in a secret word.
_SECRET_FLAG = re.compile(
    rf"(?P<flag>--[A-Za-z0-9_-]*{_SECRET_WORD})(?P<sep>=|\s+)(?P<value>[^\s-]\S*)", re.I
)
# `HF_TOKEN=...`, `password=...` (libpq strings, URL queries), `'password': '...'` (a dict's
# repr in a traceback): a key ending in a secret word.
_SECRET_ASSIGNMENT = re.compile(
    rf"(?P<key>(?<![A-Za-z0-9])[A-Za-z0-9_.\-]*{_SECRET_WORD})"
    r"(?P<sep>['\"]?\s*[=:]\s*['\"]?)(?P<value>[^\s&;,'\"]+)",
    re.I,
)
_BEARER = re.compile(r"(?P<kind>\b(?:Bearer|Basic)\s+)(?P<value>[A-Za-z0-9._~+/=\-]{8,})", re.I)
# Tokens recognisable by their shape alone (GitHub, Hugging Face, AWS access key ids).
_TOKEN_SHAPES = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|hf_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16})\b"
)


def redact(text: str) -> str:
    """`text` with passwords in URLs, token flags, secret assignments and known token shapes
    replaced by `***`; the rest (user names, hosts, database names) is kept for debugging."""
    text = _URL_USERINFO.sub(_mask_userinfo, text)
    text = _SECRET_FLAG.sub(lambda m: f"{m['flag']}{m['sep']}{MASK}", text)
    text = _SECRET_ASSIGNMENT.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m['kind']}{MASK}", text)
    return _TOKEN_SHAPES.sub(MASK, text)


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match["userinfo"].partition(":")
    # A user with no password is often a token itself (https://TOKEN@github.com/...).
    return f"{match['scheme']}{user}:{MASK}@" if colon else f"{match['scheme']}{MASK}@"


class RedactingFilter(logging.Filter):
    """Rewrites each record it passes with its message, arguments and traceback redacted; on a
    handler, it covers every logger that propagates there, whatever the handler's format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class RedactingFormatter(logging.Formatter):
    """Another formatter's output, redacted. Unlike a filter it leaves the record alone: a
    record is shared by every handler it reaches, and one that rewrote its arguments would
    change what the others (a test's log capture, a user's own handler) see."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def configure_logging(**basic_config: Any) -> None:
    """`logging.basicConfig(**basic_config)`, with every root handler's output redacted."""
    logging.basicConfig(**basic_config)
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(handler.formatter))
