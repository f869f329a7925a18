"""Which models a run may use: one the deployment allows and Bedrock serves, checked before any job.

A model id of a known family that Bedrock does not serve (a typo, a model not in this region)
would otherwise pass validation, reach Bedrock as a job, fail every record and be retried. The
list comes from ListFoundationModels and is cached: it changes when AWS launches a model.
"""
from __future__ import annotations

import asyncio
import time
from typing import Protocol

from shared.domain.access import model_refusal
from shared.domain.bodies import foundation_model_id
from shared.errors import InvalidRunSpec

CACHE_S = 600


class FoundationModels(Protocol):
    async def foundation_model_ids(self) -> set[str]: ...

    async def base_model(self, model_id: str) -> str: ...


class ModelCatalog:
    """Checks model ids against the allowed globs and Bedrock's foundation models (cached)."""

    def __init__(self, bedrock: FoundationModels, *, allowed: list[str], cache_s: float = CACHE_S) -> None:
        self._bedrock = bedrock
        self._allowed = allowed
        self._cache_s = cache_s
        self._ids: set[str] | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def check(self, model_id: str) -> None:
        """Raise InvalidRunSpec saying why `model_id` cannot be used; RetryableError if Bedrock's
        list cannot be read just now."""
        refusal = model_refusal(model_id, allowed=self._allowed)
        if refusal:
            raise InvalidRunSpec(refusal)
        wanted = foundation_model_id(model_id)
        if wanted is None:
            return  # a custom or provisioned model, or an application profile: Bedrock checks it
        served = await self._served()
        if wanted not in served:
            similar = sorted(m for m in served if m.split(".", 1)[0] == wanted.split(".", 1)[0])[:8]
            raise InvalidRunSpec(
                f"model {model_id!r} is not one Bedrock serves in this region"
                + (f"; models of that provider it serves: {', '.join(similar)}" if similar else "")
                + ". Check the model id (ListFoundationModels shows them) and that model access is granted")

    async def base_model(self, model_id: str) -> str:
        """The foundation model a custom, provisioned or deployed model ARN is built on (from Bedrock)."""
        return await self._bedrock.base_model(model_id)

    async def _served(self) -> set[str]:
        async with self._lock:
            if self._ids is None or time.monotonic() - self._read_at > self._cache_s:
                self._ids = await self._bedrock.foundation_model_ids()
                self._read_at = time.monotonic()
            return self._ids
