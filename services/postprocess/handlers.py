"""postprocess: once a run's work has ended, finish it as its kind does (services/postprocess/kinds):
a batch run retries what failed once and joins the results back to every input row; an
evaluation scores its children's answers and chooses."""
from __future__ import annotations

import structlog

from services.postprocess.kinds import COLLECTORS, CollectPorts
from shared.adapters.bedrock import Runtime
from shared.adapters.objects import SyncObjects
from shared.adapters.queues import Queues
from shared.adapters.registry import Registry
from shared.adapters.response_cache import ResponseCache
from shared.adapters.store import RunStore
from shared.messages import CollectRun
from shared.settings import Settings

log = structlog.get_logger("quarry.postprocess")


async def collect_run(cmd: CollectRun, *, store: RunStore, queues: Queues, objects: SyncObjects, runtime: Runtime,
                      settings: Settings, cache: ResponseCache | None = None, registry: Registry | None = None) -> None:
    run = await store.get_run(cmd.run_id)
    if run is None or run.terminal or run.status == "PREPARING":
        return
    await COLLECTORS[run.kind](run, ports=CollectPorts(store=store, queues=queues, objects=objects, runtime=runtime,
                                                       settings=settings, cache=cache, registry=registry))
