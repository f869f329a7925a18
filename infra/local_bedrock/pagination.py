"""List pagination as Bedrock's List* operations do it: maxResults and an opaque nextToken."""
from __future__ import annotations

import base64
import datetime as dt
from typing import Any, Sequence, TypeVar

from infra.local_bedrock.errors import validation

T = TypeVar("T")


def page(items: Sequence[T], params: dict[str, Any], *, default_size: int = 1000) -> tuple[list[T], str | None]:
    """One page of `items` (already filtered and sorted) and the token of the next, if any."""
    start = decode_token(params.get("nextToken"))
    size = params.get("maxResults", default_size)
    chosen = list(items[start : start + size])
    return chosen, encode_token(start + size) if start + size < len(items) else None


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        kind, _, offset = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind == "offset":
            return int(offset)
    except (ValueError, UnicodeDecodeError):
        pass
    raise validation(f"The nextToken {token} is not valid.")


def aware(moment: dt.datetime) -> dt.datetime:
    """A timestamp filter's value in UTC (a value without a zone is taken as UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)
