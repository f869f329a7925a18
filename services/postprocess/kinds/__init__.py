"""How each kind of run is collected once its work has ended: one collector per run kind."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from shared.adapters.bedrock import Runtime
from shared.adapters.customization import Customizations
from shared.adapters.objects import SyncObjects
from shared.adapters.queues import Queues
from shared.adapters.registry import Registry
from shared.adapters.response_cache import ResponseCache
from shared.adapters.store import RunStore
from shared.settings import Settings


@dataclass(frozen=True)
class CollectPorts:
    store: RunStore
    queues: Queues
    objects: SyncObjects
    runtime: Runtime
    settings: Settings
    cache: ResponseCache | None = None
    registry: Registry | None = None
    customizations: Customizations | None = None


Collector = Callable[..., Awaitable[None]]


class _Registry(dict):
    def __missing__(self, kind: str) -> Collector:
        from services.postprocess.kinds import batch, customize, evaluate  # noqa: PLC0415 - they import CollectPorts

        self.update({"batch": batch.collect, "evaluate": evaluate.collect, "customize": customize.collect})
        if kind not in self:
            raise KeyError(f"no collector for run kind {kind!r}")
        return self[kind]


COLLECTORS: dict[str, Collector] = _Registry()
