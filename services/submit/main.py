"""submit worker process: `python -m services.submit.main`."""
from __future__ import annotations

from functools import partial

from services.submit.handlers import cancel_run, submit_job
from shared.bootstrap import Ports, by_type, run_worker
from shared.messages import SUBMIT_INBOX, CancelRun, SubmitJob


def wire(p: Ports):
    return by_type({
        SubmitJob: partial(submit_job, store=p.store, bedrock=p.batch_jobs, queues=p.queues, settings=p.settings,
                           customizations=p.customizations),
        CancelRun: partial(cancel_run, store=p.store, bedrock=p.batch_jobs, queues=p.queues,
                           customizations=p.customizations),
    })


def main() -> None:
    run_worker("submit", SUBMIT_INBOX, wire)


if __name__ == "__main__":
    main()
