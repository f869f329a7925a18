"""How each kind of run starts once preprocess has recorded it: one starter per run kind.

batch stages one input for one spec; evaluate stages a dataset and starts one child batch run per
model (services/preprocess/kinds/evaluate.py). Every starter takes the run and the same ports.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from services.preprocess.models import ModelCatalog
from shared.adapters.bedrock import Runtime
from shared.adapters.customization import Customizations
from shared.adapters.objects import SyncObjects
from shared.adapters.queues import Queues
from shared.adapters.registry import Registry
from shared.adapters.response_cache import ResponseCache
from shared.adapters.store import RunStore
from shared.settings import Settings


@dataclass(frozen=True)
class StartPorts:
    store: RunStore
    queues: Queues
    objects: SyncObjects
    runtime: Runtime
    settings: Settings
    models: ModelCatalog | None = None
    cache: ResponseCache | None = None
    registry: Registry | None = None
    customizations: Customizations | None = None


Starter = Callable[..., Awaitable[None]]


def _starters() -> dict[str, Starter]:
    from services.preprocess.kinds import batch, customize, evaluate  # noqa: PLC0415 - they import StartPorts from here

    return {"batch": batch.start, "evaluate": evaluate.start, "customize": customize.start}


class _Registry(dict):
    def __missing__(self, kind: str) -> Starter:
        self.update(_starters())
        if kind not in self:
            raise KeyError(f"no starter for run kind {kind!r}")
        return self[kind]


STARTERS: dict[str, Starter] = _Registry()
