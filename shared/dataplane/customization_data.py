"""The pre-flight of a customization: every record of the training, validation and held-out data
checked before any job exists, every problem reported at once (file, line, field, what to do),
with counts, token estimates, duplicates, overlaps, the hyperparameters filled in, and the cost.

Files are streamed line by line; only a 16-byte digest of each record's text is kept (for the
duplicate and overlap checks), so a 100,000-record file costs a few MB.

Token counts are a stated estimate, not a tokenizer: one token per 3 characters, rounded up. Real
tokenizers average about 4 characters a token on English, so the estimate errs towards refusing a
record that Bedrock would take rather than letting one through that fails the job hours later.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import orjson

from shared.domain.customization import LIMITS, PRICES, CustomizationSpec, resolve_hyperparameters

CHARS_PER_TOKEN = 3
TOKEN_ESTIMATE = "1 token per 3 characters, rounded up (conservative: English averages about 4 characters a token)"
# Strings that tokenizers read as control tokens (chat templates, sequence ends) or that break
# the JSONL reader: in training text they teach the model to end or switch turns mid-answer.
BANNED = ("\x00", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|eot_id|>",
          "<|start_header_id|>", "[INST]", "[/INST]", "<s>", "</s>")
# The problems listed in full on the run and in the email; the report file holds them all.
SHOWN_PROBLEMS = 50
MAX_KEPT_PROBLEMS = 100_000
RECORD_FIELDS = {"FINE_TUNING": ("prompt", "completion"), "CONTINUED_PRE_TRAINING": ("input",)}


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data or the spec, and what to do about it."""

    severity: str  # "error" refuses the run; "warning" is reported only
    file: str | None
    line: int | None
    field: str | None
    message: str
    fix: str

    def text(self) -> str:
        where = ", ".join(p for p in (self.file, f"line {self.line}" if self.line else None,
                                      f"field {self.field!r}" if self.field else None) if p)
        return f"[{self.severity}] {where + ': ' if where else ''}{self.message}. {self.fix}"


@dataclass
class FileFacts:
    role: str
    uri: str
    records: int = 0
    bad_records: int = 0
    tokens: int = 0
    max_record_tokens: int = 0
    duplicates: int = 0
    sha256: str = ""
    bytes: int = 0


@dataclass
class PreflightReport:
    ok: bool
    problems: list[Problem]
    problems_total: int
    files: dict[str, FileFacts]
    overlap: dict[str, int]
    hyperparameters: dict[str, str]
    defaults_filled: list[str]
    epochs: int
    token_estimate: str
    base_model: dict[str, Any]
    cost: dict[str, Any]
    budget_usd: float
    over_budget: bool

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "over_budget": self.over_budget, "budget_usd": self.budget_usd,
            "problems_total": self.problems_total, "errors": len(self.errors),
            "problems": [p.__dict__ for p in self.problems],
            "files": {role: f.__dict__ for role, f in self.files.items()}, "overlap": self.overlap,
            "hyperparameters": self.hyperparameters, "defaults_filled": self.defaults_filled,
            "token_estimate": self.token_estimate, "base_model": self.base_model, "cost": self.cost,
        }

    def as_text(self, limit: int | None = None) -> str:
        """The human-readable report (the email's body and report.txt)."""
        lines = [f"Pre-flight: {'passed' if self.ok else 'FAILED'}"
                 + (f" (over the budget of ${self.budget_usd:,.2f})" if self.over_budget else ""), ""]
        lines.append(f"Base model: {self.base_model['model_id']} ({self.base_model.get('lifecycle', 'unknown')})")
        for role, f in self.files.items():
            lines.append(f"{role:<11} {f.uri}: {f.records:,} records ({f.bad_records:,} bad), ~{f.tokens:,} tokens, "
                         f"longest ~{f.max_record_tokens:,}, {f.duplicates:,} exact duplicates, sha256 {f.sha256[:16]}…")
        if self.overlap:
            lines.append("Overlap:    " + ", ".join(f"{k}: {v:,}" for k, v in self.overlap.items()))
        shown = ", ".join(f"{k}={v}" + (" (default)" if k in self.defaults_filled else "")
                          for k, v in self.hyperparameters.items())
        lines += [f"Hyperparameters: {shown}", f"Tokens are estimated: {self.token_estimate}.", ""]
        c = self.cost
        if c:
            lines += ["Cost estimate (USD, list prices; check the AWS pricing page):",
                      f"  training  {c['training_tokens']:,} tokens x {c['epochs']} epochs at ${c['training_per_1k']}/1k = "
                      f"${c['training_usd']:,.2f}",
                      f"  storage   ${c['storage_month_usd']:,.2f} a month for the custom model",
                      f"  hosting   ${c['hosting_hour_usd']:,.2f} an hour ({c['hosting']}), "
                      f"~{c['gate_hours']:g} h during the gate = ${c['hosting_gate_usd']:,.2f}",
                      f"  total     ${c['total_usd']:,.2f} against the budget of ${self.budget_usd:,.2f}", ""]
        problems = self.problems if limit is None else self.problems[:limit]
        if problems:
            lines.append(f"Problems ({self.problems_total:,}, {len(self.errors):,} errors"
                         + (f"; the first {len(problems)} below, all in the report" if len(problems) < self.problems_total
                            else "") + "):")
            lines += [f"  {p.text()}" for p in problems]
        return "\n".join(lines)


Lines = Callable[[str], Iterable[bytes] | None]


def preflight(spec: CustomizationSpec, *, lines: Lines, lifecycle: str | None, gate_hours: float) -> PreflightReport:
    """Check everything a customization job would fail on (and what would make its gate unfair),
    reading each file once through `lines(uri)` (None: the object does not exist)."""
    problems: list[Problem] = []
    total = [0, 0]  # problems, errors

    def add(problem: Problem) -> None:
        total[0] += 1
        total[1] += problem.severity == "error"
        if len(problems) < MAX_KEPT_PROBLEMS:
            problems.append(problem)

    limits = LIMITS[spec.family]
    if lifecycle == "LEGACY":
        add(Problem("error", None, None, "base_model", f"{spec.base_model} is LEGACY on Bedrock "
                    "(ListFoundationModels modelLifecycle)", "choose an ACTIVE base model; a legacy one is retired soon"))
    hyper, defaulted, bad = resolve_hyperparameters(spec.family, spec.hyperparameters)
    for message in bad:
        name, _, text = message.partition(": ")
        add(Problem("error", None, None, name, text, "fix the value in the spec"))
    training_fields = RECORD_FIELDS[spec.type]
    digests: dict[str, dict[bytes, int]] = {}
    files: dict[str, FileFacts] = {}
    roles = [("training", spec.training_data, training_fields), ("validation", spec.validation_data, training_fields)]
    if spec.gate is not None:
        roles.append(("held_out", spec.gate.data, ("prompt", "completion")))
    for role, uri, fields in roles:
        if uri is None:
            continue
        facts, seen = _check_file(role, uri, fields, lines=lines, limits=limits, add=add)
        files[role], digests[role] = facts, seen
    _check_counts(spec, files, limits, add)
    overlap = _overlaps(digests, add, files)
    epochs = int(hyper.get("epochCount", "1"))
    cost = _cost(spec, files, epochs, gate_hours)
    over = bool(cost) and cost["total_usd"] > spec.budget_usd
    if over:
        add(Problem("error", None, None, "budget_usd", f"the estimated cost ${cost['total_usd']:,.2f} is over the "
                    f"budget of ${spec.budget_usd:,.2f}", "raise budget_usd, use fewer epochs or less data, "
                    "or a cheaper base model"))
    ok = total[1] == 0
    return PreflightReport(
        ok=ok, problems=problems, problems_total=total[0], files=files, overlap=overlap, hyperparameters=hyper,
        defaults_filled=defaulted, epochs=epochs, token_estimate=TOKEN_ESTIMATE,
        base_model={"model_id": spec.base_model, "family": spec.family, "lifecycle": lifecycle or "unknown"},
        cost=cost, budget_usd=spec.budget_usd, over_budget=over)


def _check_file(role: str, uri: str, fields: tuple[str, ...], *, lines: Lines, limits, add) -> tuple[FileFacts, dict]:
    facts = FileFacts(role=role, uri=uri)
    stream = lines(uri)
    if stream is None:
        add(Problem("error", uri, None, None, f"the {role} data does not exist", "upload it, or fix the URI in the spec"))
        return facts, {}
    sha = hashlib.sha256()
    seen: dict[bytes, int] = {}
    shape = "{" + ", ".join(f'"{f}": "..."' for f in fields) + "}"
    for number, raw in enumerate(stream, start=1):
        sha.update(raw + b"\n")
        facts.bytes += len(raw) + 1
        if not raw.strip():
            continue
        record = _record(raw, number, uri, fields, shape, add)
        if record is None:
            facts.bad_records += 1
            facts.records += 1
            continue
        facts.records += 1
        tokens = sum(estimate_tokens(v) for v in record.values())
        facts.tokens += tokens
        facts.max_record_tokens = max(facts.max_record_tokens, tokens)
        if role != "held_out" and tokens > limits.max_record_tokens:
            add(Problem("error", uri, number, None, f"the record has ~{tokens:,} tokens (estimated), over the "
                        f"family's limit of {limits.max_record_tokens:,}", "shorten or split the record"))
        completion = record.get("completion")
        if (role != "held_out" and completion is not None and limits.max_completion_tokens is not None
                and estimate_tokens(completion) > limits.max_completion_tokens):
            add(Problem("error", uri, number, "completion", f"~{estimate_tokens(completion):,} tokens (estimated), over "
                        f"the limit of {limits.max_completion_tokens:,}", "shorten the completion"))
        digest = hashlib.blake2b(_normal(record.get("prompt", record.get("input", ""))).encode(), digest_size=16).digest()
        whole = hashlib.blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
        if whole in seen:
            facts.duplicates += 1
            add(Problem("warning", uri, number, None, f"an exact duplicate of line {seen[whole]}",
                        "remove it: duplicates weigh a record twice and cost twice"))
        else:
            seen[whole] = number
        seen.setdefault(b"P" + digest, number)
    facts.sha256 = sha.hexdigest()
    if facts.records == 0:
        add(Problem("error", uri, None, None, f"the {role} data has no records", f"add records of the shape {shape}"))
    return facts, seen


def _record(raw: bytes, number: int, uri: str, fields: tuple[str, ...], shape: str, add) -> dict[str, str] | None:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        add(Problem("error", uri, number, None, f"not valid JSON ({exc})", f"write one JSON object a line: {shape}"))
        return None
    if not isinstance(record, dict):
        add(Problem("error", uri, number, None, f"a JSON {type(record).__name__}, not an object",
                    f"write one JSON object a line: {shape}"))
        return None
    good = True
    for name in fields:
        value = record.get(name)
        if name not in record:
            add(Problem("error", uri, number, name, "missing", f"every record needs {shape}"))
            good = False
        elif not isinstance(value, str):
            add(Problem("error", uri, number, name, f"a {type(value).__name__}, not a string", "write it as a string"))
            good = False
        elif not value.strip():
            add(Problem("error", uri, number, name, "empty", "give it text, or remove the record"))
            good = False
        else:
            banned = [b for b in BANNED if b in value]
            if banned:
                add(Problem("error", uri, number, name, f"holds {', '.join(map(repr, banned))}, which tokenizers read as "
                            "control tokens", "remove them from the text"))
                good = False
    for name in sorted(set(record) - set(fields)):
        add(Problem("error", uri, number, name, "not a field these records take", f"keep only {shape}"))
        good = False
    return {name: record[name] for name in fields} if good else None


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _check_counts(spec: CustomizationSpec, files: dict[str, FileFacts], limits, add) -> None:
    train = files.get("training")
    validation = files.get("validation")
    if train is not None and 0 < train.records < limits.min_training_records:
        add(Problem("error", train.uri, None, None, f"{train.records} training records, fewer than the minimum of "
                    f"{limits.min_training_records}", "add records"))
    if validation is not None and validation.records > limits.max_validation_records:
        add(Problem("error", validation.uri, None, None, f"{validation.records:,} validation records, over the maximum "
                    f"of {limits.max_validation_records:,}", "use fewer validation records"))
    maximum = limits.max_pre_training_records if spec.type == "CONTINUED_PRE_TRAINING" else limits.max_fine_tuning_records
    together = (train.records if train else 0) + (validation.records if validation else 0)
    if together > maximum:
        add(Problem("error", train.uri if train else None, None, None, f"{together:,} training and validation records, "
                    f"over Bedrock's maximum of {maximum:,} for {spec.type}", "use fewer records"))


def _overlaps(digests: dict[str, dict[bytes, int]], add, files: dict[str, FileFacts]) -> dict[str, int]:
    """Records whose prompt (or text) is the same, after case and whitespace, in two files. A held-out
    record the model trained on makes the gate unfair, so that is an error; validation overlapping
    training only flatters the validation loss, so that is a warning."""
    def prompts(role: str) -> dict[bytes, int]:
        return {k: v for k, v in digests.get(role, {}).items() if k.startswith(b"P")}

    overlap: dict[str, int] = {}
    pairs = [("validation", "training", "warning"), ("held_out", "training", "error"), ("held_out", "validation", "error")]
    for role, other, severity in pairs:
        if role not in digests or other not in digests:
            continue
        theirs = prompts(other)
        hits = [(line, theirs[key]) for key, line in prompts(role).items() if key in theirs]
        overlap[f"{role}_in_{other}"] = len(hits)
        for line, their_line in sorted(hits):
            add(Problem(severity, files[role].uri, line, "prompt", f"the same prompt as line {their_line} of the "
                        f"{other} data ({files[other].uri})",
                        "remove it from one of them: held-out data must be unseen in training" if severity == "error"
                        else "remove it from one of them: the validation loss is flattered by records trained on"))
    return overlap


def _cost(spec: CustomizationSpec, files: dict[str, FileFacts], epochs: int, gate_hours: float) -> dict[str, Any]:
    prices = PRICES.get(spec.base_model)
    if prices is None:
        return {}
    train_tokens = files["training"].tokens if "training" in files else 0
    training = train_tokens * epochs / 1000 * prices.training_per_1k
    hourly = prices.pt_hour * spec.hosting.model_units if spec.hosting.type == "provisioned" else 0.0
    hours = gate_hours if spec.gate is not None and spec.hosting.type != "none" else 0.0
    hosting = {"provisioned": f"{spec.hosting.model_units} model unit(s) of provisioned throughput, no commitment",
               "deployment": "on-demand deployment: no hourly charge, billed per token",
               "none": "none"}[spec.hosting.type]
    total = training + prices.storage_month + hourly * hours
    return {"training_tokens": train_tokens, "epochs": epochs, "training_per_1k": prices.training_per_1k,
            "training_usd": round(training, 4), "storage_month_usd": prices.storage_month, "hosting": hosting,
            "hosting_hour_usd": round(hourly, 2), "gate_hours": gate_hours if hours else 0,
            "hosting_gate_usd": round(hourly * hours, 4), "total_usd": round(total, 4)}
