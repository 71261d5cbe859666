"""Hide credentials in URLs before they reach a message, a log line or a summary.

``https://user:secret@host/path`` becomes ``https://user:***@host/path`` and
``?token=abc`` / ``&X-Amz-Signature=...`` query values become ``***``. The CLI applies
:func:`redact_text` to every error line, every log record (:class:`RedactingFilter`) and
every ``--json`` summary (:func:`redact_obj`), so a credential given on the command line is
never echoed back.
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["RedactingFilter", "install_log_redaction", "redact_obj", "redact_text", "redact_url"]

MASK = "***"

# scheme://userinfo@ : keep the user name, hide whatever follows its first colon
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/@\s'\"]+)@")
# query parameters whose value is a secret (presigned URLs, SAS tokens, API keys)
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&](?:[A-Za-z0-9_\-]*(?:token|secret|password|passwd|signature|credential|"
    r"key|sig|auth)[A-Za-z0-9_\-]*))=(?P<value>[^&#\s'\"]+)",
    re.IGNORECASE,
)


def _userinfo(match: re.Match[str]) -> str:
    user, sep, _ = match.group("userinfo").partition(":")
    return f"{match.group('scheme')}{user}:{MASK}@" if sep else f"{match.group('scheme')}{MASK}@"


def redact_text(text: str) -> str:
    """Replace credentials in every URL found in ``text`` with ``***``.

    Parameters
    ----------
    text : str
        Any message: an error, a log line, a path.

    Returns
    -------
    str
        ``text`` with URL passwords (or user-only tokens) and secret query values masked.
    """
    text = _USERINFO.sub(_userinfo, text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group('key')}={MASK}", text)


def redact_url(url: Any) -> str:
    """Return ``str(url)`` with its credentials masked (see :func:`redact_text`)."""
    return redact_text(str(url))


def redact_obj(obj: Any) -> Any:
    """Redact every string inside a JSON-like structure (dicts, lists, tuples)."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_obj(v) for v in obj]
    return obj


class RedactingFilter(logging.Filter):
    """Logging filter that redacts the formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with credentials masked; never drops a record."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: leave it to logging
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_log_redaction(*names: str) -> None:
    """Add a :class:`RedactingFilter` to every handler of the root logger and of ``names``.

    Loggers that do not propagate to the root (distributed configures its own handler)
    must be named.
    """
    for name in ("", *names):
        for handler in logging.getLogger(name or None).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
