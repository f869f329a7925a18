"""An evaluation's judge stage: once every model has answered, the judge model rates each answer.

One stage, after generation: for each model with answers, one judge dataset (a row per answered
record and rubric: the judge prompt, the record's index and the rubric) is streamed to the work
bucket from the staged dataset and the model's result file read in step, and one child batch run
of the judge model reads it, through the same machinery as generation (splitter, slots, tokens,
polling, retries, on demand below a job's minimum, the response cache). The judge runs are
recorded on the parent with their StartRuns in the same write, so a redelivered collect starts
none twice. Their answers are read back by evaluation_outputs.judge_scores when scoring.
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from pathlib import Path

import orjson

from services.postprocess.evaluation_outputs import RUBRIC, _answers, _ensure, _rows
from shared.adapters.objects import SyncObjects
from shared.dataplane.eval_dataset import INDEX
from shared.domain import layout
from shared.domain.bodies import InferenceParams
from shared.domain.evaluation import EvaluationConfig
from shared.domain.runs import Run
from shared.domain.spec import RunSpec
from shared.evaluation.judge import judge_prompt, rubrics_of
from shared.settings import Settings


def judge_run_id(parent_run_id: str, model_name: str) -> str:
    """The judge run of one model's answers: derived from the parent and the model, so a redelivery finds it."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"quarry:{parent_run_id}:judge:{model_name}").hex


def judge_dataset_uri(settings: Settings, parent_run_id: str, model_name: str) -> str:
    return f"{layout.run_prefix(settings, parent_run_id)}/judge/{model_name}.jsonl"


def judge_spec(config: EvaluationConfig, model_name: str) -> RunSpec:
    """The batch spec of the judge's child run over one model's judge dataset."""
    judge = config.judge
    assert judge is not None
    params = InferenceParams.model_validate(judge.params)
    cache = config.cache if config.cache is not None else ("reuse" if params.temperature == 0 else "off")
    return RunSpec(model_id=judge.model_id, template="{{ input }}", params=params, output_format="parquet",
                   name=f"{config.name or 'evaluation'}/judge/{model_name}"[:100], cache=cache)


def stage_judging(run: Run, children: dict[str, Run | None], *, objects: SyncObjects,
                  settings: Settings) -> dict[str, int]:
    """Write every model's judge dataset; judge rows per model name (0: nothing to judge, no file).
    Blocking: run it from a worker thread."""
    config = run.evaluation
    assert config is not None and config.judge is not None
    rubrics = rubrics_of(config.judge)
    names = [m.name for m in config.models if children.get(m.name) is not None and children[m.name].result_uri]
    workdir = Path(tempfile.mkdtemp(prefix=f"judge-{run.run_id}-", dir=_ensure(settings.workdir)))
    counts = dict.fromkeys(names, 0)
    try:
        answers = {name: _answers(children[name], objects, settings, workdir) for name in names}
        with contextlib.ExitStack() as files:
            out = {name: files.enter_context(objects.writing(judge_dataset_uri(settings, run.run_id, name)))
                   for name in names}
            for rows in _rows(objects.lines(layout.dataset_uri(settings, run.run_id)), answers, config):
                for row in rows:
                    for name in names:
                        answer = row.models.get(name)
                        if answer is None or answer.output is None or answer.error is not None:
                            continue  # a failed generation is not judged: it has no score to give
                        for rubric in rubrics:
                            prompt = judge_prompt(rubric, question=row.input, output=answer.output,
                                                  references=row.references)
                            out[name].write(orjson.dumps({"input": prompt, INDEX: row.index, RUBRIC: rubric.name})
                                            + b"\n")
                            counts[name] += 1
        return counts
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
