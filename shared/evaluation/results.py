"""What an evaluation run writes: one row per dataset record, and one `results.json` per run.

Two outputs, both under the run in the results bucket:
- `records.jsonl` / `records.parquet`: one `RecordRow` per dataset record, every model's output,
  error and scores side by side (Parquet columns follow `record_schema`).
- `results.json`: one `EvaluationResults`: per-model means with bootstrap confidence intervals
  (overall and per category), the pairwise tests, the selection and the Pareto front.

Conventions shared by every model here:
- A score is a float, or None when it is missing. A failed generation is an error with every
  score None: it is never scored 0, and means leave it out (it is counted in `missing`).
- Floats are finite: NaN and infinities never reach JSON; they are written as None.
- A difference `a - b` is always the first model's score minus the second's, on the records
  both models answered (paired).
- Changes add fields; they never rename or drop one (E3's report and the registry read these).
"""
from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- per-record rows (records.jsonl / records.parquet) -------------------------------------------
class ModelAnswer(_Frozen):
    """One model's answer to one record, and its scores."""

    # The generated text, or None when generation failed (then `error` says why).
    output: str | None = None
    # Why generation failed (Bedrock's errorCode: errorMessage, or Quarry's own reason), else None.
    error: str | None = None
    # True when the answer came from the response cache (no Bedrock call paid in this run).
    from_cache: bool = False
    # Token counts Bedrock reported for this pair; None when it did not say (or generation failed).
    input_tokens: int | None = None
    output_tokens: int | None = None
    # True when the pair went on demand (InvokeModel) rather than through a batch job: it is priced
    # at on-demand rates.
    on_demand: bool = False
    # classification_accuracy's predicted label (the first valid label in the output, else "unknown").
    label: str | None = None
    # Metric name -> score for this record; None when missing (failed generation, or a metric
    # that could not be computed, e.g. a record without a reference).
    scores: dict[str, float | None] = Field(default_factory=dict)
    # Why a judge score of this answer is missing ("<rubric>: <reason>; ..."): the judge's call
    # failed, or its answer held no readable rating. None when every rubric was rated.
    judge_error: str | None = None


class RecordRow(_Frozen):
    """One dataset record with every model's answer: a line of records.jsonl."""

    # 0-based position of the record in the dataset as read (before limit/sample).
    index: int
    # 1-based line of the source file where the record starts (for CSV, counting the header line).
    line: int | None = None
    # The rendered input (the prompt the models saw, before each model's own template).
    input: str
    # The raw reference string as it is in the dataset (e.g. "Paris<OR>Paris, France"), or None.
    target: str | None = None
    # The references after splitting `target` on the delimiter (the best-scoring one counts).
    references: list[str] = Field(default_factory=list)
    # The value of the category column, or None when the config names none.
    category: str | None = None
    # Model name (as in the config) -> its answer.
    models: dict[str, ModelAnswer] = Field(default_factory=dict)


def record_schema(model_names: list[str], metric_names: list[str]) -> pa.Schema:
    """The Parquet schema of records.parquet: RecordRow with `models` a struct per model name.

    `models.<name>.scores.<metric>` is a nullable double; a failed generation has a null output,
    a non-null error and null scores.
    """
    scores = pa.struct([pa.field(m, pa.float64()) for m in metric_names])
    answer = pa.struct([
        pa.field("output", pa.string()),
        pa.field("error", pa.string()),
        pa.field("from_cache", pa.bool_()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("on_demand", pa.bool_()),
        pa.field("label", pa.string()),
        pa.field("scores", scores),
        pa.field("judge_error", pa.string()),
    ])
    return pa.schema([
        pa.field("index", pa.int64(), nullable=False),
        pa.field("line", pa.int64()),
        pa.field("input", pa.string()),
        pa.field("target", pa.string()),
        pa.field("references", pa.list_(pa.string())),
        pa.field("category", pa.string()),
        pa.field("models", pa.struct([pa.field(n, answer) for n in model_names])),
    ])


def records_to_arrow(rows: list[RecordRow], model_names: list[str], metric_names: list[str]) -> pa.Table:
    """RecordRows as an Arrow table of `record_schema` (a model absent from a row is null)."""
    schema = record_schema(model_names, metric_names)
    data = []
    for row in rows:
        d = row.model_dump()
        d["models"] = {
            n: ({**d["models"][n], "scores": {m: d["models"][n]["scores"].get(m) for m in metric_names}}
                if n in d["models"] else None)
            for n in model_names
        }
        data.append(d)
    return pa.Table.from_pylist(data, schema=schema)


# --- results.json --------------------------------------------------------------------------------
class Interval(_Frozen):
    """A two-sided 95% (1 - alpha) confidence interval; both ends None when it cannot be computed
    (fewer than two scores, or no variation to resample)."""

    low: float | None = None
    high: float | None = None


class DatasetInfo(_Frozen):
    """The dataset the models were evaluated on."""

    uri: str
    # Its S3 ETag or a content hash (sha256 hex): the registry compares runs by it.
    hash: str
    # Records in the dataset as read.
    rows: int
    # Records evaluated (rows after limit/sample): every model was asked every one of these.
    used_rows: int
    # The config's `limit` (first N records) or `sample` (N records drawn with `seed`), else None:
    # Quarry never samples unless asked.
    limit: int | None = None
    sample: int | None = None
    seed: int | None = None
    # The column (or template) that made the input, the target and category columns.
    input: str | None = None
    target: str | None = None
    category: str | None = None
    # The delimiter that splits the target into several references.
    delimiter: str = "<OR>"


class MetricInfo(_Frozen):
    """A metric the run computed, as the catalogue describes it."""

    name: str
    # binary: every score is 0 or 1 (compared with exact McNemar); continuous: compared with the
    # paired bootstrap.
    kind: Literal["binary", "continuous"]
    higher_is_better: bool = True
    description: str = ""


class MetricSummary(_Frozen):
    """One model's scores on one metric: mean over the records that have a score."""

    mean: float | None = None
    # Bootstrap confidence interval of the mean (statistics.BOOTSTRAP_METHOD says which method).
    ci: Interval = Interval()
    # Records with a score (the mean's denominator).
    n: int = 0
    # Records without one (failed generation, or the metric could not be computed): left out.
    missing: int = 0


class Tokens(_Frozen):
    input: int = 0
    output: int = 0


class Cost(_Frozen):
    """What a model's generation cost, in USD, from token counts and list prices. Pairs answered
    from the cache cost nothing in this run. None where the model's price is unknown."""

    # Pairs that went through batch jobs, at batch prices (half of on-demand).
    batch_usd: float | None = None
    # Pairs that went on demand (fewer than a job's minimum, or provisioned models), at on-demand prices.
    on_demand_usd: float | None = None
    total_usd: float | None = None
    batch_records: int = 0
    on_demand_records: int = 0
    # What the whole dataset would cost at batch prices regardless of the cache: the figure that
    # compares models fairly (selection's "cheapest" uses it).
    full_batch_usd: float | None = None


class Latency(_Frozen):
    """Response time of a small on-demand probe, when the config asks for one."""

    n: int
    mean_ms: float
    p50_ms: float
    p90_ms: float


class ClassLabelScores(_Frozen):
    precision: float | None = None
    recall: float | None = None
    # Records whose target is this label.
    support: int = 0


class ClassificationSummary(_Frozen):
    """Corpus-level classification scores (the classification_accuracy metric's companions)."""

    accuracy: float | None = None
    # Mean per-class recall over the labels present in the targets.
    balanced_accuracy: float | None = None
    per_class: dict[str, ClassLabelScores] = Field(default_factory=dict)
    # Outputs whose words held no valid label (predicted "unknown").
    unknown: int = 0


class ModelResult(_Frozen):
    """One evaluated model."""

    name: str
    model_id: str
    # failed: no usable answer at all (or the config said it failed); it is left out of the
    # comparison and the selection lists it.
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    # Records asked, records whose generation failed, records answered from the cache.
    records: int = 0
    errors: int = 0
    from_cache: int = 0
    tokens: Tokens = Tokens()
    cost: Cost = Cost()
    latency: Latency | None = None
    # Metric name -> summary over all records.
    metrics: dict[str, MetricSummary] = Field(default_factory=dict)
    # Category -> metric name -> summary over that category's records.
    categories: dict[str, dict[str, MetricSummary]] = Field(default_factory=dict)
    classification: ClassificationSummary | None = None
    # Corpus-level figures that are not a mean of per-record scores (e.g. corpus BLEU).
    corpus: dict[str, float | None] = Field(default_factory=dict)
    # Most common generation errors: [error, count], most frequent first (at most 5).
    top_errors: list[tuple[str, int]] = Field(default_factory=list)


class Comparison(_Frozen):
    """Model a against model b on one metric, over the records both have a score for."""

    metric: str
    a: str
    b: str
    # Paired records (both scored).
    n: int
    # mean(score_a - score_b); positive means a did better on a higher-is-better metric.
    mean_difference: float | None
    ci: Interval = Interval()
    test: Literal["paired_bootstrap", "permutation", "mcnemar_exact"]
    p_value: float | None = None
    # Holm-adjusted p over all pairs compared on this metric (the family is one metric).
    p_holm: float | None = None
    # p_holm < alpha.
    significant: bool = False
    # For mcnemar_exact: records a got right and b wrong, and the reverse (the discordant pairs).
    a_only: int | None = None
    b_only: int | None = None


class Selection(_Frozen):
    """Which model to use, and why."""

    outcome: Literal["winner", "no_significant_difference", "insufficient_models"]
    primary_metric: str
    min_effect: float
    alpha: float
    # The model that beat each other candidate by more than min_effect, significantly (Holm);
    # None unless outcome is "winner".
    winner: str | None = None
    # The leader's (the winner's, or the best mean's when there is none) smallest lead: its
    # difference to the runner-up (the other model closest to it), with the paired interval.
    runner_up: str | None = None
    margin: float | None = None
    margin_ci: Interval = Interval()
    # The model to use: the winner, or the cheapest of the models statistically tied with the best.
    recommended: str | None = None
    # The models tied with the best on the primary metric (the best included), when no winner.
    tied: list[str] = Field(default_factory=list)
    # Models left out of the comparison because they failed.
    failed: list[str] = Field(default_factory=list)
    # Models compared but left out of the choice, with why (over max_cost_usd or max_latency_ms).
    excluded: dict[str, str] = Field(default_factory=dict)
    # The decision in words, for the report and the email.
    reason: str


class ParetoPoint(_Frozen):
    """A model's place in quality (primary metric mean, higher is better), cost and latency (lower
    is better). A model is on the front when no other is at least as good on every axis and
    better on one; an axis with a None value for some model is left out of the comparison."""

    model: str
    quality: float | None
    cost_usd: float | None
    latency_ms: float | None = None
    on_front: bool


class JudgeRubricInfo(_Frozen):
    """A rubric the judge rated every answer on."""

    name: str
    # Its scores' metric name in `metrics`, per record and per model: judge_<name>.
    metric: str
    instructions: str
    # [definition, value] from worst to best, as the judge saw them (numbered 1..K in its prompt).
    scale: list[tuple[str, float]]
    # True: a built-in rubric, scored 0..1 (the scale's worst level 0, its best 1); False: a custom
    # rubric, scored with the chosen level's own value.
    normalised: bool


class JudgeInfo(_Frozen):
    """LLM-as-judge, when the config asked for it: the second stage, after generation."""

    model_id: str
    rubrics: list[JudgeRubricInfo] = Field(default_factory=list)
    # Model name -> the judge's child run over that model's answers.
    runs: dict[str, str] = Field(default_factory=dict)
    # Model name -> rubric -> answers left without a judge score (the judge's call failed or its
    # rating could not be read): missing, never 0.
    unrated: dict[str, dict[str, int]] = Field(default_factory=dict)
    # Model name -> what judging that model's answers cost (batch prices), None where unknown.
    cost_usd: dict[str, float | None] = Field(default_factory=dict)


class EvaluationResults(_Frozen):
    """The aggregate of one evaluation run: results.json."""

    schema_version: Literal[1] = SCHEMA_VERSION
    run_id: str
    # sha256 of the canonical config: the registry groups results by it.
    config_hash: str
    created_at: str | None = None
    dataset: DatasetInfo
    # Model name -> the decoding parameters that model was run with (after shared defaults and
    # per-model overrides are merged).
    decoding: dict[str, dict[str, Any]] = Field(default_factory=dict)
    metrics: list[MetricInfo] = Field(default_factory=list)
    primary_metric: str
    min_effect: float
    alpha: float
    # Confidence level of every interval (0.95) and the bootstrap used (see statistics.py).
    confidence_level: float = 0.95
    bootstrap_method: str = "percentile"
    bootstrap_resamples: int = 0
    seed: int = 0
    models: list[ModelResult] = Field(default_factory=list)
    comparisons: list[Comparison] = Field(default_factory=list)
    selection: Selection
    pareto: list[ParetoPoint] = Field(default_factory=list)
    # LLM-as-judge's settings and bookkeeping; its scores are the judge_<rubric> metrics above.
    judge: JudgeInfo | None = None

    def model(self, name: str) -> ModelResult:
        """The result of the model with this name (KeyError when there is none)."""
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)
