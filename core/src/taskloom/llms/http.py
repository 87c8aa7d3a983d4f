"""HTTP answers to core's error classes, shared by every HTTP provider.

Providers differ in their SDKs but not in what a status code means, so the mapping (and the
reading of ``Retry-After``) lives here once; a provider only extracts status, message and
headers from its SDK's exception.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

from taskloom.errors import (
    AuthenticationError,
    BadRequestError,
    OverloadedError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    TaskloomError,
)


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked to wait: ``retry-after-ms``, else ``Retry-After`` (seconds or a date)."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_for_status(
    status: int, message: str, headers: Mapping[str, str] | None = None, *, auth_hint: str = ""
) -> TaskloomError:
    """The core error for an HTTP error status; ``message`` must already be free of secrets.

    429 rate limit, 503/529 overload, 408 timeout and other 5xx are retried by core;
    401/403 stop the run (``auth_hint`` says where the key comes from); other 4xx fail the row.
    """
    wait = retry_after(headers)
    if status == 429:
        return RateLimitError(message, retry_after=wait, status=status)
    if status in (503, 529):
        return OverloadedError(message, retry_after=wait, status=status)
    if status == 408:
        return RequestTimeoutError(message, retry_after=wait, status=status)
    if status in (401, 403):
        return AuthenticationError(f"{message}. {auth_hint}" if auth_hint else message)
    if status >= 500:
        return ServerError(message, retry_after=wait, status=status)
    return BadRequestError(message)


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    return text.replace(secret, "***") if secret else text
