"""poll worker process: `python -m services.poll.main`."""
from __future__ import annotations

from functools import partial

from services.poll.handlers import check_job, customization_state_changed, job_state_changed
from shared.bootstrap import Ports, by_type, run_worker
from shared.messages import POLL_INBOX, BedrockJobStateChanged, CheckJob, CustomizationJobStateChanged


def wire(p: Ports):
    return by_type({
        CheckJob: partial(check_job, store=p.store, bedrock=p.batch_jobs, queues=p.queues, settings=p.settings,
                          customizations=p.customizations),
        BedrockJobStateChanged: partial(job_state_changed, store=p.store, bedrock=p.batch_jobs, queues=p.queues,
                                        settings=p.settings),
        CustomizationJobStateChanged: partial(customization_state_changed, store=p.store, queues=p.queues,
                                              customizations=p.customizations),
    })


def main() -> None:
    run_worker("poll", POLL_INBOX, wire)


if __name__ == "__main__":
    main()
