"""The few errors handlers decide on. Adapters turn AWS's errors into these."""
from __future__ import annotations


class QuarryError(Exception):
    """Base of Quarry's own errors."""


class RetryableError(QuarryError):
    """Try again later: throttling, quotas, 5xx, a slot not free yet."""

    def __init__(self, message: str, *, delay_s: int | None = None) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class PermanentError(QuarryError):
    """Retrying cannot help: validation, access, a missing resource."""


class ConflictError(QuarryError):
    """A conditional write lost: someone else changed the item first."""


class InvalidRunSpec(PermanentError):
    """A run spec, profile or request that does not validate; the message says what to fix."""
