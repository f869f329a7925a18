"""How each kind of run is collected once its work has ended: one collector per run kind."""
from __future__ import annotations

import importlib
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


_MODULES = {kind: f"services.postprocess.kinds.{kind}" for kind in ("batch", "evaluate", "customize")}


class _Registry(dict):
    def __missing__(self, kind: str) -> Collector:
        if kind not in _MODULES:
            raise KeyError(f"no collector for run kind {kind!r}")
        # Only the kind's own module (they import CollectPorts from here): the evaluation kind brings
        # scipy, nltk and the metrics, ~64 MB a batch-only worker would otherwise carry.
        self[kind] = importlib.import_module(_MODULES[kind]).collect
        return self[kind]


COLLECTORS: dict[str, Collector] = _Registry()
