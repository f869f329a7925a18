"""The evaluation config: what an `evaluate` run compares, on which data, and how it chooses.

One pydantic model, validated the same way whatever started the run (an S3 drop-in under
`evaluations/`, a `Quarry Evaluation Requested` event, `quarry evaluate`). An error names the
field path and what is allowed. The config is kept on the parent run; each model becomes a child
batch run whose spec `child_spec` derives from it.
"""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from shared.domain.bodies import InferenceParams, family_of
from shared.domain.evolving import STRICT
from shared.domain.spec import RunSpec, is_custom_arn
from shared.domain.written_config import WrittenConfig, canonical_hash, parse_written

CHAMPION_PREFIX = "champion@"
DEFAULT_DELIMITER = "<OR>"
CacheMode = Literal["reuse", "refresh", "off"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class DatasetConfig(WrittenConfig):
    """Where the records are and which columns make the input, the target and the category."""

    uri: str = Field(pattern=r"^s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9]/.+", max_length=1100,
                     description="s3://bucket/key of a CSV, TSV, JSONL or Parquet file (optionally .gz)")
    input: str | None = Field(None, description="the column holding each record's input")
    template: str | None = Field(None, description="a jinja2 template over the columns that makes the input")
    target: str | None = Field(None, description="the column of reference answers")
    delimiter: str = Field(DEFAULT_DELIMITER, min_length=1, description="splits a target into several references")
    category: str | None = Field(None, description="an optional column to break the scores down by")
    limit: int | None = Field(None, ge=1, description="use only the first N records")
    sample: int | None = Field(None, ge=1, description="use N records drawn at random with `seed`")
    seed: int = 1234

    @model_validator(mode="after")
    def _one_way_each(self) -> "DatasetConfig":
        if self.input is not None and self.template is not None:
            raise ValueError("give either `input` (a column) or `template` (jinja2 over the columns), not both")
        if self.limit is not None and self.sample is not None:
            raise ValueError("give either `limit` (the first N records) or `sample` (N drawn with `seed`), not both")
        return self


class ModelConfig(WrittenConfig):
    """One model to evaluate."""

    name: str = Field(description="a short unique name, e.g. haiku (letters, digits, _ . -)")
    model_id: str = Field(min_length=1, description="a foundation model id, inference profile, custom model ARN, "
                                                    "provisioned-throughput ARN, deployment ARN, or champion@<group>")
    template: str | None = Field(None, description="this model's prompt, jinja2 over the columns and `input`")
    system: str | None = None
    params: dict[str, Any] | None = Field(None, description="decoding parameters for this model only")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError("must be 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return name

    @field_validator("model_id")
    @classmethod
    def _model_id(cls, model_id: str) -> str:
        if model_id.startswith(CHAMPION_PREFIX):
            if not _NAME.match(model_id.removeprefix(CHAMPION_PREFIX)):
                raise ValueError("champion@<group> needs a registry group name after the @")
            return model_id
        if is_custom_arn(model_id):
            return model_id  # its base model (and so its family) is read from Bedrock when the run starts
        family_of(model_id)  # an unknown family is refused with the supported ones listed
        return model_id


class RatingLevel(WrittenConfig):
    definition: str = Field(min_length=1)
    value: float


class Rubric(WrittenConfig):
    """A judge rubric: one of Bedrock's built-in ones, or a custom one with a rating scale."""

    name: str
    instructions: str | None = None
    rating_scale: list[RatingLevel] | None = None

    @field_validator("name")
    @classmethod
    def _rubric_name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError("must be 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return name

    @field_validator("rating_scale")
    @classmethod
    def _two_levels(cls, scale: list[RatingLevel] | None) -> list[RatingLevel] | None:
        if scale is not None and len(scale) < 2:
            raise ValueError("a rating scale needs at least two levels")
        return scale

    @model_validator(mode="after")
    def _custom_needs_scale(self) -> "Rubric":
        if self.name not in BUILTIN_RUBRICS and not self.rating_scale:
            raise ValueError(f"the custom rubric {self.name!r} needs a rating_scale (a list of "
                             "{definition, value}); built-in rubrics: " + ", ".join(BUILTIN_RUBRICS))
        if self.name not in BUILTIN_RUBRICS and not self.instructions:
            raise ValueError(f"the custom rubric {self.name!r} needs instructions")
        return self


BUILTIN_RUBRICS = ("correctness", "completeness", "faithfulness", "helpfulness", "coherence", "relevance",
                   "following_instructions", "professional_style_and_tone")


class JudgeConfig(WrittenConfig):
    """LLM-as-judge: once every model has answered, the judge model rates each answer on each rubric
    (a second stage of child batch runs); its scores become the metrics judge_<rubric>."""

    model_id: str = Field(min_length=1, description="the judge: a foundation model id or inference profile")
    rubrics: list[Rubric] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0, "max_tokens": 256},
                                   description="the judge's decoding parameters")

    @field_validator("model_id")
    @classmethod
    def _judge_model(cls, model_id: str) -> str:
        if not is_custom_arn(model_id):
            family_of(model_id)  # an unknown family is refused with the supported ones listed
        return model_id

    @model_validator(mode="after")
    def _unique(self) -> "JudgeConfig":
        names = [r.name for r in self.rubrics]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rubrics: {', '.join(map(repr, twice))} named twice; give each rubric a unique name")
        _params(self.params, "judge.params")
        return self


class SelectionConfig(WrittenConfig):
    """How the winner is chosen: the primary metric, the smallest lead worth switching for, the
    significance level, and limits on cost and latency."""

    primary: str | None = Field(None, description="the metric that decides (default: the first metric)")
    min_effect: float = Field(0.0, ge=0, description="the smallest lead on the primary metric worth switching for")
    alpha: float = Field(0.05, gt=0, lt=1, description="the significance level, after Holm's correction")
    max_cost_usd: float | None = Field(None, ge=0, description="models costing more on the whole dataset are left out")
    max_latency_ms: float | None = Field(None, ge=0, description="models slower (mean of the probe) are left out")


class RegistryConfig(WrittenConfig):
    group: str

    @field_validator("group")
    @classmethod
    def _group(cls, group: str) -> str:
        if not _NAME.match(group):
            raise ValueError("must be 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return group


class EvaluationConfig(WrittenConfig):
    """An evaluation: a dataset, two or more models, metrics, and the selection rule."""

    name: str | None = Field(None, max_length=100)
    dataset: DatasetConfig
    models: list[ModelConfig] = Field(min_length=1)
    task: Literal["qa", "summarization", "classification", "generation"] | None = None
    metrics: list[str] | None = None
    # Decoding parameters shared by every model unless a model overrides them.
    params: dict[str, Any] = Field(default_factory=dict)
    system: str | None = None
    judge: JudgeConfig | None = None
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    registry: RegistryConfig | None = None
    cache: CacheMode | None = Field(None, description="reuse | refresh | off (default: reuse at temperature 0, else off)")
    # The embedding model semantic_similarity uses (Titan Embeddings; the local engine answers with MiniLM).
    embedding_model: str = "amazon.titan-embed-text-v2:0"
    # Records per model sent on demand to measure latency (0: none).
    latency_probe: int = Field(0, ge=0, le=100)
    recipients: list[str] = Field(default_factory=list)

    @field_validator("registry", mode="before")
    @classmethod
    def _registry_shorthand(cls, value: Any) -> Any:
        return {"group": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> "EvaluationConfig":
        names = [m.name for m in self.models]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"models: two models are named {', '.join(map(repr, twice))}; give each a unique name")
        metrics = self.metric_names
        known = metric_catalogue()
        unknown = [m for m in metrics if m not in known]
        if unknown:
            raise ValueError(f"metrics: unknown metric(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
        scored = metrics + self.judge_metric_names
        if self.selection.primary is not None and self.selection.primary not in scored:
            raise ValueError(f"selection.primary: {self.selection.primary!r} is not one of the run's metrics "
                             f"({', '.join(scored)})")
        _params(self.params, "params")
        for i, model in enumerate(self.models):
            if model.params is not None:
                _params({**self.params, **model.params}, f"models.{i}.params")
        return self

    @property
    def metric_names(self) -> list[str]:
        if self.metrics:
            return list(dict.fromkeys(self.metrics))
        from shared.evaluation import metrics  # noqa: PLC0415 - the task presets are the scoring library's

        return list(metrics.PRESETS[self.task or "qa"])

    @property
    def judge_metric_names(self) -> list[str]:
        """The judge's metrics, one per rubric: judge_<rubric> (scored by the judge stage)."""
        return [f"judge_{r.name}" for r in self.judge.rubrics] if self.judge is not None else []

    @property
    def primary_metric(self) -> str:
        return self.selection.primary or self.metric_names[0]

    def params_for(self, model: ModelConfig) -> InferenceParams:
        return InferenceParams.model_validate({**self.params, **(model.params or {})})

    def cache_for(self, model: ModelConfig) -> CacheMode:
        """The config's cache mode, else reuse for deterministic decoding (temperature 0) and off otherwise:
        a sampled answer is one draw, and reusing it would hide the model's variance."""
        if self.cache is not None:
            return self.cache
        return "reuse" if self.params_for(model).temperature == 0 else "off"

    def config_hash(self) -> str:
        """sha256 of the canonical config (sorted keys, defaults filled): equal configs, equal hashes."""
        return canonical_hash(self)


def _params(params: dict[str, Any], where: str) -> None:
    try:
        InferenceParams.model_validate(params, context=STRICT)
    except ValidationError as exc:
        problems = "; ".join(
            f"{where}.{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" if e["loc"]
            else f"{where}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise ValueError(problems) from None


def metric_catalogue() -> set[str]:
    """The metric names the scoring library knows (shared/evaluation/metrics.py; semantic_similarity's
    embeddings come from Bedrock, through the evaluate kind)."""
    from shared.evaluation import metrics  # noqa: PLC0415 - the scoring library is heavy; load it when needed

    return set(metrics.catalogue_names())


def parse_config(raw: bytes | str | dict[str, Any], *, where: str) -> EvaluationConfig:
    """A validated config from YAML or JSON text (or a parsed mapping); InvalidRunSpec naming
    `where` and each bad field's path otherwise."""
    return parse_written(EvaluationConfig, raw, where=where, what="evaluation config",
                         fields="dataset, models and metrics")


def child_spec(config: EvaluationConfig, model: ModelConfig, *, model_id: str, base_model_id: str | None = None) -> RunSpec:
    """The batch spec of one model's child run over the staged dataset (its `input` column)."""
    return RunSpec(model_id=model_id, template=model.template or "{{ input }}", system=model.system or config.system,
                   params=config.params_for(model), output_format="parquet",
                   name=f"{config.name or 'evaluation'}/{model.name}"[:100], cache=config.cache_for(model),
                   base_model_id=base_model_id if base_model_id != model_id else None)


def quick_config(*, dataset: str, models: list[str], metrics: list[str] | None, name: str | None = None,
                 registry: str | None = None) -> dict[str, Any]:
    """The config of `quarry evaluate --dataset FILE --model ID ...`: each model named after its id,
    deterministic decoding (so the response cache is reused)."""
    seen: dict[str, int] = {}
    entries = []
    for model_id in models:
        base = re.sub(r"[^A-Za-z0-9_.-]", "-", model_id.rsplit("/", 1)[-1])[:56].strip("-.") or "model"
        seen[base] = seen.get(base, 0) + 1
        entries.append({"name": base if seen[base] == 1 else f"{base}-{seen[base]}", "model_id": model_id})
    config: dict[str, Any] = {"dataset": {"uri": dataset}, "models": entries, "params": {"temperature": 0}}
    if metrics:
        config["metrics"] = metrics
    if name:
        config["name"] = name
    if registry:
        config["registry"] = registry
    return config
