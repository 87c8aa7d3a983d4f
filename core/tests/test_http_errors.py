"""The shared mapping from HTTP answers to core's error classes."""

from __future__ import annotations

import email.utils
import time

import pytest

from taskloom.errors import (
    AuthenticationError,
    BadRequestError,
    OverloadedError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
)
from taskloom.llms.http import error_for_status, redact, retry_after


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (429, RateLimitError),
        (503, OverloadedError),
        (529, OverloadedError),
        (408, RequestTimeoutError),
        (500, ServerError),
        (502, ServerError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (400, BadRequestError),
        (404, BadRequestError),
        (422, BadRequestError),
    ],
)
def test_status_maps_to_its_class(status: int, cls: type) -> None:
    error = error_for_status(status, f"HTTP {status}")
    assert type(error) is cls
    assert f"HTTP {status}" in str(error)


def test_rate_limit_carries_retry_after() -> None:
    error = error_for_status(429, "slow down", {"retry-after": "7"})
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 7 and error.status == 429


def test_auth_hint_is_appended() -> None:
    assert "Set OPENAI_API_KEY" in str(error_for_status(401, "HTTP 401", auth_hint="Set OPENAI_API_KEY"))


def test_retry_after_forms() -> None:
    assert retry_after(None) is None
    assert retry_after({}) is None
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": " 3 "}) == 3
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (retry_after({"retry-after": future}) or 0) <= 30
    assert retry_after({"retry-after": "soon"}) is None


def test_redact() -> None:
    assert redact("key sk-123 rejected", "sk-123") == "key *** rejected"
    assert redact("nothing", None) == "nothing"
