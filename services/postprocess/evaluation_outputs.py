"""An evaluation's scoring pass: every record with every model's answer, scored, written, aggregated.

Blocking (boto3, pyarrow, the scoring library), run from a worker thread. The staged dataset and
each child's result file (Parquet, one row per record in dataset order) are read in step, a batch
of records at a time, so memory holds one batch of rows and the per-record score arrays (8 bytes a
record, model and metric), never a whole file. Per-record rows go to records.jsonl and
records.parquet, the aggregate to results.json, and the report (E3's renderer) to report.html,
all under the run's evaluation/ prefix in the results bucket.
"""
from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from shared.adapters.objects import SyncObjects
from shared.dataplane.eval_dataset import CATEGORY, INDEX, INPUT, TARGET, split_references
from shared.dataplane.prepare import row_of
from shared.domain import layout
from shared.domain.evaluation import EvaluationConfig
from shared.domain.runs import Run
from shared.evaluation import metrics as mt
from shared.evaluation.report import render_report
from shared.evaluation.results import (
    DatasetInfo, EvaluationResults, JudgeInfo, JudgeRubricInfo, Latency, ModelAnswer, RecordRow, record_schema,
    records_to_arrow,
)
from shared.evaluation.judge import JudgeRubric, parse_rating, rubrics_of
from shared.evaluation.scoring import ModelInfo, Scorer, ScoringConfig
from shared.settings import Settings

BATCH = 2_000
RUBRIC = "quarry_rubric"  # the judge dataset's rubric column (services/postprocess/judging.py)
_RESULT_COLUMNS = ["output", "error", "input_tokens", "output_tokens"]
# Embeds a list of texts with the config's embedding model: one vector each (None where it failed).
Embed = Callable[[list[str]], list[list[float] | None]]


@dataclass(frozen=True)
class EvaluationOutputs:
    results: EvaluationResults
    records_uri: str
    parquet_uri: str
    results_uri: str
    report_uri: str


def score_evaluation(run: Run, children: dict[str, Run | None], *, objects: SyncObjects, settings: Settings,
                     embed: Embed | None, judges: dict[str, Run | None] | None = None) -> EvaluationOutputs:
    config = run.evaluation
    assert config is not None
    names = [m.name for m in config.models]
    metrics = config.metric_names + config.judge_metric_names
    rubrics = rubrics_of(config.judge)
    latency = run.latency or {}
    models = [_model_info(config, name, run.model_ids.get(name, ""), children.get(name), latency.get(name))
              for name in names]
    labels = None
    if any(mt.resolve(n).name == "classification_accuracy" for n in config.metric_names):
        labels = _labels(objects.lines(layout.dataset_uri(settings, run.run_id)), config.dataset.delimiter)
    scorer = Scorer(ScoringConfig(metrics=metrics, primary_metric=config.primary_metric,
                                  min_effect=config.selection.min_effect, alpha=config.selection.alpha,
                                  delimiter=config.dataset.delimiter, labels=labels,
                                  max_cost_usd=config.selection.max_cost_usd,
                                  max_latency_ms=config.selection.max_latency_ms,
                                  extra_metrics={r.metric: "continuous" for r in rubrics}), models)
    prefix = layout.evaluation_prefix(settings, run.run_id)
    workdir = Path(tempfile.mkdtemp(prefix=f"evaluate-{run.run_id}-", dir=_ensure(settings.workdir)))
    try:
        answers = {name: _answers(children.get(name), objects, settings, workdir) for name in names}
        verdicts = {name: _Verdicts.of((judges or {}).get(name), objects, workdir) for name in names} if rubrics else {}
        unrated = {name: dict.fromkeys((r.name for r in rubrics), 0) for name in verdicts}
        jsonl_path, parquet_path = workdir / "records.jsonl", workdir / "records.parquet"
        schema = record_schema(names, metrics)
        with open(jsonl_path, "wb") as jsonl, pq.ParquetWriter(parquet_path, schema, compression="zstd") as parquet:
            for rows in _rows(objects.lines(layout.dataset_uri(settings, run.run_id)), answers, config):
                if embed is not None and "semantic_similarity" in metrics:
                    rows = _with_similarity(rows, embed)
                if rubrics:
                    rows = _with_judgements(rows, verdicts, rubrics, unrated)
                scored = scorer.score(rows)
                for row in scored:
                    jsonl.write(orjson.dumps(row.model_dump(mode="json")) + b"\n")
                parquet.write_table(records_to_arrow(scored, names, metrics))
        dataset = run.dataset or {}
        results = scorer.results(
            run_id=run.run_id, config_hash=config.config_hash(), created_at=run.created_at.isoformat(),
            dataset=DatasetInfo(uri=config.dataset.uri, hash=dataset.get("hash", ""), rows=dataset.get("rows", 0),
                                used_rows=dataset.get("used_rows", 0), limit=config.dataset.limit,
                                sample=config.dataset.sample,
                                seed=config.dataset.seed if config.dataset.sample is not None else None,
                                input=dataset.get("input"), target=dataset.get("target"),
                                category=dataset.get("category"), delimiter=config.dataset.delimiter))
        if config.judge is not None:
            results = results.model_copy(update={"judge": _judge_info(config, judges or {}, unrated)})
        report = render_report(results, _read_rows(jsonl_path), full_results=f"{prefix}/records.jsonl and records.parquet")
        uris = EvaluationOutputs(results, f"{prefix}/records.jsonl", f"{prefix}/records.parquet",
                                 f"{prefix}/results.json", f"{prefix}/report.html")
        objects.upload_file(str(jsonl_path), uris.records_uri)
        objects.upload_file(str(parquet_path), uris.parquet_uri)
        objects.put(uris.results_uri, results.model_dump_json(indent=2).encode())
        objects.put(uris.report_uri, report.encode())
        return uris
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _model_info(config: EvaluationConfig, name: str, model_id: str, child: Run | None,
                latency: dict[str, Any] | None = None) -> ModelInfo:
    model = next(m for m in config.models if m.name == name)
    decoding = config.params_for(model).model_dump(exclude_none=True, exclude_defaults=False)
    if child is None or child.result_uri is None:
        why = (child.error if child is not None and child.error else "its generation never produced results")
        return ModelInfo(name=name, model_id=model_id or model.model_id, status="failed", error=why, decoding=decoding)
    probe = Latency.model_validate(latency) if latency and latency.get("n") else None
    return ModelInfo(name=name, model_id=model_id, decoding=decoding, latency=probe)


@dataclass
class _Answers:
    """One child's results, read a batch of rows at a time, and which of its rows came from the cache."""

    batches: Iterator[pa.RecordBatch] | None
    cached_rows: set[int]
    on_demand: bool
    held: pa.Table | None = None

    def take(self, n: int) -> pa.Table | None:
        if self.batches is None:
            return None
        parts = [self.held] if self.held is not None and self.held.num_rows else []
        have = sum(p.num_rows for p in parts)
        while have < n:
            batch = next(self.batches, None)
            if batch is None:
                break
            parts.append(pa.Table.from_batches([batch]))
            have += batch.num_rows
        table = pa.concat_tables(parts) if parts else None
        if table is None:
            return None
        self.held = table.slice(n)
        return table.slice(0, n)


def _answers(child: Run | None, objects: SyncObjects, settings: Settings, workdir: Path) -> _Answers:
    if child is None or child.result_uri is None:
        return _Answers(None, set(), False)
    path = workdir / f"child-{child.run_id}.parquet"
    with open(path, "wb") as out:
        shutil.copyfileobj(objects.open(child.result_uri), out, 1 << 20)
    batches = pq.ParquetFile(path).iter_batches(batch_size=BATCH, columns=_RESULT_COLUMNS)
    cached: set[int] = set()
    if child.cached_records:
        for key in objects.keys(f"{layout.run_prefix(settings, child.run_id)}/cached/"):
            for line in objects.lines(f"s3://{settings.work_bucket}/{key}"):
                cached.add(row_of(orjson.loads(line)["recordId"]))
    return _Answers(batches, cached, child.on_demand)


def _rows(lines: Iterator[bytes], answers: dict[str, _Answers], config: EvaluationConfig) -> Iterator[list[RecordRow]]:
    pending: list[dict[str, Any]] = []
    position = 0
    for line in lines:
        if not line.strip():
            continue
        pending.append(orjson.loads(line))
        if len(pending) >= BATCH:
            yield _batch(pending, position, answers, config)
            position += len(pending)
            pending = []
    if pending:
        yield _batch(pending, position, answers, config)


def _batch(records: list[dict[str, Any]], position: int, answers: dict[str, _Answers],
           config: EvaluationConfig) -> list[RecordRow]:
    tables = {name: a.take(len(records)) for name, a in answers.items()}
    columns = {name: (t.to_pydict() if t is not None else None) for name, t in tables.items()}
    rows = []
    for i, record in enumerate(records):
        models = {}
        for name, cols in columns.items():
            if cols is None or i >= len(cols["output"]):
                continue
            error = cols["error"][i] or None
            models[name] = ModelAnswer(
                output=None if error else cols["output"][i], error=error,
                from_cache=(position + i) in answers[name].cached_rows, on_demand=answers[name].on_demand,
                input_tokens=_int(cols["input_tokens"][i]), output_tokens=_int(cols["output_tokens"][i]))
        target = record.get(TARGET)
        rows.append(RecordRow(index=int(record[INDEX]), input=record.get(INPUT) or "", target=target,
                              references=split_references(target, config.dataset.delimiter),
                              category=record.get(CATEGORY), models=models))
    return rows


class _Verdicts:
    """One judge run's answers (its result file, in dataset order: a row per judged record and
    rubric), read a batch at a time as scoring walks the dataset."""

    def __init__(self, batches: Iterator[pa.RecordBatch] | None, failed: str | None) -> None:
        self._batches = batches
        self._held: list[tuple[int, str, str | None, str | None]] = []
        self.failed = failed

    @classmethod
    def of(cls, judge: Run | None, objects: SyncObjects, workdir: Path) -> "_Verdicts":
        if judge is None or judge.result_uri is None:
            why = (judge.error if judge is not None and judge.error else "the judge run produced no results")
            return cls(None, f"the judge's run failed: {why}" if judge is not None else None)
        path = workdir / f"judge-{judge.run_id}.parquet"
        with open(path, "wb") as out:
            shutil.copyfileobj(objects.open(judge.result_uri), out, 1 << 20)
        return cls(pq.ParquetFile(path).iter_batches(batch_size=BATCH, columns=[INDEX, RUBRIC, "output", "error"]),
                   None)

    def upto(self, last_index: int) -> dict[int, dict[str, tuple[str | None, str | None]]]:
        """index -> rubric -> (judge output, judge error) for every judged record up to `last_index`."""
        out: dict[int, dict[str, tuple[str | None, str | None]]] = {}
        while True:
            while self._held and self._held[0][0] <= last_index:
                index, rubric, output, error = self._held.pop(0)
                out.setdefault(index, {})[rubric] = (output, error or None)
            if self._held or self._batches is None:
                return out
            batch = next(self._batches, None)
            if batch is None:
                self._batches = None
                return out
            d = batch.to_pydict()
            self._held = list(zip((int(i) for i in d[INDEX]), d[RUBRIC], d["output"], d["error"]))


def _with_judgements(rows: list[RecordRow], verdicts: dict[str, _Verdicts], rubrics: list[JudgeRubric],
                     unrated: dict[str, dict[str, int]]) -> list[RecordRow]:
    """Each answered pair's judge scores (judge_<rubric>), read from the judge's answers; a rating
    that cannot be read is a missing score with the reason in judge_error, never 0."""
    if not rows:
        return rows
    last = rows[-1].index
    judged = {name: v.upto(last) for name, v in verdicts.items()}
    out = []
    for row in rows:
        models = {}
        for name, answer in row.models.items():
            if name not in verdicts or answer.output is None or answer.error is not None:
                models[name] = answer
                continue
            found = judged[name].get(row.index, {})
            scores, problems = {}, []
            for rubric in rubrics:
                output, error = found.get(rubric.name, (None, verdicts[name].failed or "the judge gave no answer"))
                level, why = (None, f"the judge's call failed: {error}") if error else parse_rating(rubric, output)
                scores[rubric.metric] = rubric.score(level) if level is not None else None
                if level is None:
                    problems.append(f"{rubric.name}: {why}")
                    unrated[name][rubric.name] += 1
            models[name] = answer.model_copy(update={"scores": {**answer.scores, **scores},
                                                     "judge_error": "; ".join(problems) or None})
        out.append(row.model_copy(update={"models": models}))
    return out


def _judge_info(config: EvaluationConfig, judges: dict[str, Run | None], unrated: dict[str, dict[str, int]]) -> JudgeInfo:
    rubrics = rubrics_of(config.judge)
    cost = {name: (run.summary or {}).get("estimated_cost_usd") if run is not None else None
            for name, run in judges.items()}
    return JudgeInfo(
        model_id=config.judge.model_id,
        rubrics=[JudgeRubricInfo(name=r.name, metric=r.metric, instructions=r.instructions,
                                 scale=[[lv.definition, lv.value] for lv in r.levels], normalised=r.normalised)
                 for r in rubrics],
        runs={name: run.run_id for name, run in judges.items() if run is not None},
        unrated=unrated, cost_usd=cost)


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return int(value)


def _with_similarity(rows: list[RecordRow], embed: Embed) -> list[RecordRow]:
    """semantic_similarity for every answered pair: the cosine of the output's and the best
    reference's embeddings, from the embedding model on Bedrock."""
    texts: dict[str, None] = {}
    for row in rows:
        for ref in row.references:
            texts[ref] = None
        for answer in row.models.values():
            if answer.output is not None and answer.error is None:
                texts[answer.output] = None
    ordered = list(texts)
    vectors = dict(zip(ordered, embed(ordered)))
    out = []
    for row in rows:
        refs = [vectors[r] for r in row.references if vectors.get(r) is not None]
        models = {}
        for name, answer in row.models.items():
            vector = vectors.get(answer.output) if answer.output is not None and answer.error is None else None
            score = float(mt.best_cosine(np.asarray(vector), [np.asarray(r) for r in refs])) \
                if vector is not None and refs else None
            models[name] = answer.model_copy(update={"scores": {**answer.scores, "semantic_similarity": score}})
        out.append(row.model_copy(update={"models": models}))
    return out


def _read_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as f:
        for line in f:
            yield orjson.loads(line)


def _labels(lines: Iterator[bytes], delimiter: str) -> list[str]:
    labels: set[str] = set()
    for line in lines:
        if line.strip():
            labels.update(r.lower() for r in split_references(orjson.loads(line).get(TARGET), delimiter))
    return sorted(labels)


def _ensure(path: Path) -> str:
    Path(path).mkdir(parents=True, exist_ok=True)
    return str(path)


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()
