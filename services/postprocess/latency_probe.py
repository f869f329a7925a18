"""An evaluation's latency probe: the config's `latency_probe: N` sends each model N of the
dataset's records on demand, one at a time, and times each InvokeModel call.

Batch jobs say nothing about response time, so this is the only latency an evaluation has: the
first N records are rendered exactly as the model's child run rendered them (its spec through the
same prepare step), sent one after another (a model's latency, not its throughput; the models are
probed side by side), never answered from the cache, and summarised as mean, p50 and p90 in
milliseconds. The figures are kept on the parent run once measured, so a redelivered collect does
not probe again. A call that fails is left out of the figures; a model none of whose calls
succeeded has no latency (and so no latency axis in the Pareto front).
"""
from __future__ import annotations

import asyncio
import io
import itertools
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import structlog

from services.postprocess.evaluation_outputs import _ensure
from shared.adapters.bedrock import Runtime
from shared.adapters.objects import SyncObjects
from shared.dataplane.prepare import PrepareLimits, PrepareSpec, prepare
from shared.domain import layout
from shared.domain.runs import Run
from shared.errors import QuarryError
from shared.settings import Settings

log = structlog.get_logger("quarry.postprocess")
# More records than any probe: prepare then plans no job, only the records.
_NEVER = 1 << 62


def probe_bodies(run: Run, child: Run, n: int, *, objects: SyncObjects, settings: Settings) -> list[dict[str, Any]]:
    """The model inputs of the dataset's first `n` records, as `child` (the model's run) sent them.
    Blocking: run it from a worker thread."""
    spec = child.spec
    assert spec is not None
    head = b"".join(line + b"\n" for line in itertools.islice(
        (line for line in objects.lines(layout.dataset_uri(settings, run.run_id)) if line.strip()), n))
    if not head:
        return []
    workdir = Path(tempfile.mkdtemp(prefix=f"probe-{child.run_id}-", dir=_ensure(settings.workdir)))
    try:
        prepared = prepare(io.BytesIO(head), name=layout.dataset_uri(settings, run.run_id),
                           spec=PrepareSpec(model_id=spec.family_model, template=spec.template, system=spec.system,
                                            params=spec.params, converse=spec.invocation == "Converse"),
                           limits=PrepareLimits(min_records=_NEVER, max_records=_NEVER,
                                                max_record_bytes=settings.max_record_bytes),
                           workdir=workdir)
        with open(prepared.spool_path, "rb") as spool:
            return [orjson.loads(line)["modelInput"] for line in spool if line.strip()]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def latency_figures(samples_ms: list[float]) -> dict[str, Any] | None:
    """n, mean, p50 and p90 (linear interpolation) of the successful calls' times; None without any."""
    if not samples_ms:
        return None
    x = np.asarray(samples_ms, dtype=float)
    return {"n": int(x.size), "mean_ms": round(float(x.mean()), 3), "p50_ms": round(float(np.percentile(x, 50)), 3),
            "p90_ms": round(float(np.percentile(x, 90)), 3)}


async def time_calls(model_id: str, bodies: list[dict[str, Any]], *, runtime: Runtime) -> list[float]:
    """Each body sent on its own, one after another: the milliseconds of every call that succeeded."""
    samples = []
    for body in bodies:
        started = time.perf_counter()
        try:
            await runtime.invoke(model_id, body)
        except QuarryError as exc:
            log.info("latency_probe_call_failed", model_id=model_id, error_type=type(exc).__name__)
            continue
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def probe_latency(run: Run, children: dict[str, Run | None], *, runtime: Runtime, objects: SyncObjects,
                        settings: Settings) -> dict[str, dict[str, Any]]:
    """Model name -> latency figures ({} for a model that failed or whose every probe call failed)."""
    n = run.evaluation.latency_probe

    async def one(name: str, child: Run | None) -> tuple[str, dict[str, Any]]:
        if child is None or child.spec is None or child.result_uri is None:
            return name, {}
        bodies = await asyncio.to_thread(probe_bodies, run, child, n, objects=objects, settings=settings)
        figures = latency_figures(await time_calls(child.spec.model_id, bodies, runtime=runtime))
        log.info("latency_probed", model=name, calls=len(bodies), ok=figures["n"] if figures else 0)
        return name, figures or {}

    return dict(await asyncio.gather(*(one(name, child) for name, child in children.items())))
