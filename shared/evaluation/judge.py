"""LLM-as-judge: the rubrics, the prompt a judge model answers, and reading its rating back.

The rubrics are Bedrock's LLM-as-judge metrics (BEDROCK.md): correctness, completeness,
faithfulness, helpfulness, coherence, relevance, following_instructions and
professional_style_and_tone, each with the rating scale Bedrock's built-in judge uses, and custom
rubrics (instructions plus a rating scale of {definition, value}). A built-in rating is normalised
to 0..1 (the scale's lowest definition 0, its highest 1), as Bedrock reports built-in judge scores;
a custom rubric's score is the chosen level's own value.

The prompt lists the scale as numbered levels and asks for a last line `Rating: <number>`; the
rating is read from the judge's answer robustly (the last `Rating:` line, a level's number or its
definition, bracketed or bold). An answer with no readable rating is a missing score with an error,
never a score of 0.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from shared.domain.evaluation import BUILTIN_RUBRICS, JudgeConfig, Rubric

PREFIX = "judge_"
# How much of each text a judge prompt quotes: a judge's context is finite, and a runaway output
# must not make the judge's record too large for a batch job.
MAX_QUOTED_CHARS = 6_000


@dataclass(frozen=True)
class Level:
    definition: str
    value: float


@dataclass(frozen=True)
class JudgeRubric:
    """A rubric ready to ask: what to judge, on which levels, and whether the score is normalised."""

    name: str
    instructions: str
    levels: tuple[Level, ...]
    uses_reference: bool
    normalised: bool

    @property
    def metric(self) -> str:
        """The metric name its scores get in results.json and the report."""
        return metric_name(self.name)

    def score(self, level: Level) -> float:
        if not self.normalised:
            return level.value
        low, high = min(x.value for x in self.levels), max(x.value for x in self.levels)
        return (level.value - low) / (high - low) if high > low else 1.0


def _scale(*definitions: str) -> tuple[Level, ...]:
    return tuple(Level(d, float(i)) for i, d in enumerate(definitions))


_LIKERT = ("Not at all", "Not generally", "Neutral/Mixed", "Generally yes", "Yes")
# name -> (what the judge is asked, the levels from worst to best, whether the reference is shown).
_BUILTIN: dict[str, tuple[str, tuple[Level, ...], bool]] = {
    "correctness": (
        "Judge whether the response answers the question correctly. Where a reference answer is given, "
        "it is correct; the response need not repeat it word for word.",
        _scale("incorrect", "partially correct", "correct"), True),
    "completeness": (
        "Judge whether the response contains all the information needed to answer the question fully "
        "(everything the reference answer holds, where one is given).",
        _scale(*_LIKERT), True),
    "faithfulness": (
        "Judge whether the response says only what the question and its context support, adding no "
        "claim that cannot be found in or inferred from them.",
        _scale("none is faithful", "some is faithful", "approximately half is faithful", "most is faithful",
               "all is faithful"), False),
    "helpfulness": (
        "Judge how helpful the response is to the person who asked: whether it addresses their need, "
        "is accurate, clear and of the right length.",
        _scale("not helpful at all", "very unhelpful", "somewhat unhelpful", "neither helpful nor unhelpful",
               "somewhat helpful", "very helpful", "above and beyond"), False),
    "coherence": (
        "Judge whether the response is logically coherent: its reasoning follows, with no contradiction "
        "or gap.", _scale(*_LIKERT), False),
    "relevance": (
        "Judge how relevant the response is to the question.",
        _scale("not at all", "slightly", "somewhat", "mostly", "completely"), False),
    "following_instructions": (
        "Judge whether the response follows every explicit instruction in the question.",
        _scale("No", "Yes"), False),
    "professional_style_and_tone": (
        "Judge whether the response's style, formatting and tone suit a professional setting.",
        _scale("not at all", "not generally", "neutral/mixed", "generally yes", "completely yes"), False),
}
assert set(_BUILTIN) == set(BUILTIN_RUBRICS)


def metric_name(rubric: str) -> str:
    return f"{PREFIX}{rubric}"


def rubric_of(rubric: Rubric) -> JudgeRubric:
    """The rubric a config names: a built-in one (its scale unless the config gives one), or custom."""
    if rubric.name in _BUILTIN:
        instructions, levels, uses_reference = _BUILTIN[rubric.name]
        if rubric.rating_scale:
            levels = tuple(Level(x.definition, x.value) for x in rubric.rating_scale)
        return JudgeRubric(rubric.name, rubric.instructions or instructions, levels, uses_reference, normalised=True)
    levels = tuple(Level(x.definition, x.value) for x in rubric.rating_scale or ())
    return JudgeRubric(rubric.name, rubric.instructions or "", levels, uses_reference=True, normalised=False)


def rubrics_of(judge: JudgeConfig | None) -> list[JudgeRubric]:
    return [rubric_of(r) for r in judge.rubrics] if judge is not None else []


def _quote(text: str) -> str:
    return text if len(text) <= MAX_QUOTED_CHARS else text[:MAX_QUOTED_CHARS] + " [...]"


def judge_prompt(rubric: JudgeRubric, *, question: str, output: str, references: list[str]) -> str:
    """The prompt the judge model answers for one (record, model answer, rubric)."""
    parts = ["You are an impartial judge of a response written by an AI model.", rubric.instructions, "",
             "<question>", _quote(question), "</question>"]
    if rubric.uses_reference and references:
        parts += ["<reference_answer>", _quote(" OR ".join(references)), "</reference_answer>"]
    parts += ["<response>", _quote(output), "</response>", "", "Rating scale:"]
    parts += [f"{i}. {level.definition}" for i, level in enumerate(rubric.levels, 1)]
    parts += ["", "Explain your judgement in one or two sentences, then end with a last line of the form "
                  f"\"Rating: <number>\", where <number> is one of 1 to {len(rubric.levels)} from the scale above."]
    return "\n".join(parts)


_RATING = re.compile(r"rating\s*[:=\-]?\s*(?:is\s*)?[\[(*\"']*\s*(?P<value>[^\n]*)", re.IGNORECASE)
_NUMBER = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?:\s*(?:/|out of)\s*\d+)?\b")


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9/ ]+", " ", text.lower()).strip()


def parse_rating(rubric: JudgeRubric, answer: str | None) -> tuple[Level | None, str | None]:
    """The level the judge chose, or (None, why) when its answer holds no readable rating.

    The last `Rating:` in the answer counts (a judge may quote the instruction first); after it a
    level's number (1..K as the prompt numbered them, `3`, `[[3]]`, `**3**`, `3/5`) or a level's
    definition. Without any `Rating:`, an answer that is only a number or a definition is read too."""
    if not answer or not answer.strip():
        return None, "the judge gave no answer"
    candidates = [m.group("value") for m in _RATING.finditer(answer)]
    if not candidates:
        candidates = [answer.strip().splitlines()[-1]]
    for raw in reversed(candidates):
        level = _level(rubric, raw)
        if level is not None:
            return level, None
    return None, f"the judge's answer holds no rating on the scale 1 to {len(rubric.levels)}"


def _level(rubric: JudgeRubric, raw: str) -> Level | None:
    text = raw.strip().strip("[]()*\"'`. ")
    number = _NUMBER.match(text)
    if number is not None:
        n = float(number.group("n"))
        if n.is_integer() and 1 <= n <= len(rubric.levels):
            return rubric.levels[int(n) - 1]
        return None
    said = _norm(text)
    if not said:
        return None
    # The longest definition that the text starts with: "partially correct" before "correct".
    for level in sorted(rubric.levels, key=lambda x: -len(x.definition)):
        if said.startswith(_norm(level.definition)):
            return level
    return None
