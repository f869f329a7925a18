"""preprocess worker process: `python -m services.preprocess.main`."""
from __future__ import annotations

from functools import partial

from services.preprocess.customizations import customization_requested
from services.preprocess.handlers import batch_requested, evaluation_requested, object_created, start_run
from services.preprocess.models import ModelCatalog
from shared.bootstrap import Ports, by_type, run_worker
from shared.domain.spec import Profiles
from shared.messages import (
    PREPROCESS_INBOX, BatchRequested, CustomizationRequested, EvaluationRequested, S3ObjectCreated, StartRun,
)
from shared.process_memory import keep_pandas_out


def wire(p: Ports):
    profiles = Profiles.load(p.settings.profiles_path)
    models = ModelCatalog(p.batch_jobs, allowed=p.settings.allowed_models)
    common = dict(store=p.store, queues=p.queues, objects=p.objects, runtime=p.runtime, settings=p.settings,
                  models=models, cache=p.cache, registry=p.registry)
    return by_type({
        StartRun: partial(start_run, **common, customizations=p.customizations),
        S3ObjectCreated: partial(object_created, profiles=profiles, **common, customizations=p.customizations),
        BatchRequested: partial(batch_requested, profiles=profiles, **common),
        EvaluationRequested: partial(evaluation_requested, **common),
        CustomizationRequested: partial(customization_requested, **common, customizations=p.customizations),
    })


def main() -> None:
    keep_pandas_out()
    run_worker("preprocess", PREPROCESS_INBOX, wire)


if __name__ == "__main__":
    main()
