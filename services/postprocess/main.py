"""postprocess worker process: `python -m services.postprocess.main`."""
from __future__ import annotations

from functools import partial

from services.postprocess.handlers import collect_run
from shared.bootstrap import Ports, by_type, run_worker
from shared.messages import POSTPROCESS_INBOX, CollectRun
from shared.process_memory import keep_pandas_out


def wire(p: Ports):
    return by_type({CollectRun: partial(collect_run, store=p.store, queues=p.queues, objects=p.objects,
                                        runtime=p.runtime, settings=p.settings, cache=p.cache,
                                        registry=p.registry, customizations=p.customizations)})


def main() -> None:
    keep_pandas_out()
    run_worker("postprocess", POSTPROCESS_INBOX, wire)


if __name__ == "__main__":
    main()
