"""postprocess: once a run's work has ended, finish it as its kind does (services/postprocess/kinds):
a batch run retries what failed once and joins the results back to every input row; an
evaluation scores its children's answers and chooses."""
from __future__ import annotations

import structlog

from services.postprocess.kinds import COLLECTORS, CollectPorts
from shared.adapters.bedrock import Runtime
from shared.adapters.customization import Customizations
from shared.adapters.objects import SyncObjects
from shared.adapters.queues import Queues
from shared.adapters.registry import Registry
from shared.adapters.response_cache import ResponseCache
from shared.adapters.store import RunStore
from shared.messages import CollectRun
from shared.run_lease import run_lease
from shared.settings import Settings

log = structlog.get_logger("quarry.postprocess")


async def collect_run(cmd: CollectRun, *, store: RunStore, queues: Queues, objects: SyncObjects, runtime: Runtime,
                      settings: Settings, cache: ResponseCache | None = None, registry: Registry | None = None,
                      customizations: Customizations | None = None) -> None:
    run = await store.get_run(cmd.run_id)
    if run is None or run.terminal or run.status == "PREPARING":
        return
    # One delivery collects; a duplicate (jobs ending together each send a CollectRun) waits for
    # it and then looks again: the holder may have returned early, before the last job ended.
    async def unfinished() -> bool:
        latest = await store.get_run(cmd.run_id)
        return latest is not None and not latest.terminal

    async with run_lease(store, run.run_id, "collecting", seconds=settings.run_lease_s,
                         poll_s=settings.run_lease_poll_s, needed=unfinished) as lease:
        run = await store.get_run(cmd.run_id) if lease else None
        if run is None or run.terminal or run.status == "PREPARING":
            return
        await COLLECTORS[run.kind](run, ports=CollectPorts(store=store, queues=queues, objects=objects,
                                                           runtime=runtime, settings=settings, cache=cache,
                                                           registry=registry, customizations=customizations))
