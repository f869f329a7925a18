"""The evaluate kind's later stages against in-memory fakes: LLM-as-judge (rubrics, prompts, ratings
read robustly, the judge's child runs started once), the latency probe, and cancelling an
evaluation through its children."""
from __future__ import annotations

import io
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra.local_bedrock.engines import TextRequest
from infra.local_bedrock.engines.fast import FastTextEngine
from services.postprocess.evaluation_outputs import RUBRIC, _Verdicts, _with_judgements
from services.postprocess.handlers import collect_run
from services.postprocess.judging import judge_dataset_uri, judge_run_id
from services.postprocess.latency_probe import latency_figures, probe_latency
from services.preprocess.handlers import start_run
from services.submit.handlers import cancel_run
from shared.dataplane.eval_dataset import INDEX
from shared.domain import layout
from shared.domain.evaluation import Rubric, parse_config
from shared.domain.runs import Run
from shared.errors import InvalidRunSpec, RetryableError
from shared.evaluation.judge import judge_prompt, parse_rating, rubric_of
from shared.evaluation.results import ModelAnswer, RecordRow
from shared.messages import CancelRun, CollectRun, RunFinished, StartRun
from shared.settings import Settings
from tests.unit.fakes import FakeBatchJobs, FakeObjects, FakeQueues, FakeRuntime, FakeStore

PARENT = "0123456789abcdef0123456789abcdef"
NOVA = "amazon.nova-lite-v1:0"
MICRO = "amazon.nova-micro-v1:0"
DATASET = "s3://quarry-inputs/datasets/trivia.jsonl"
CORRECTNESS = rubric_of(Rubric(name="correctness"))


def config(**changes):
    raw = {"dataset": {"uri": DATASET}, "params": {"temperature": 0},
           "models": [{"name": "lite", "model_id": NOVA}, {"name": "micro", "model_id": MICRO}]}
    raw.update(changes)
    return parse_config(raw, where="from test.yaml")


# --- the judge's rubrics, prompts and ratings ---------------------------------------------------------
@pytest.mark.parametrize("answer,definition", [
    ("The response names the right city.\nRating: 3", "correct"),
    ("Rating: [[2]]", "partially correct"),
    ("Reasoning... **Rating:** 1", "incorrect"),
    ("Rating: 3/3", "correct"),
    ("Rating: partially correct", "partially correct"),
    ("Rating: Incorrect.", "incorrect"),
    ('You asked for "Rating: <number>". Here it is.\nRating: 2', "partially correct"),
    ("3", "correct"),
])
def test_a_judges_rating_is_read_from_the_last_rating_line_as_a_number_or_a_definition(answer, definition):
    level, why = parse_rating(CORRECTNESS, answer)

    assert why is None and level.definition == definition


@pytest.mark.parametrize("answer", ["", "The response is fine.", "Rating: 7", "Rating: 0", "Rating: excellent"])
def test_an_answer_without_a_rating_on_the_scale_is_no_score_with_a_reason(answer):
    level, why = parse_rating(CORRECTNESS, answer)

    assert level is None and why


def test_builtin_ratings_are_normalised_and_custom_ones_keep_their_values():
    custom = rubric_of(Rubric(name="brevity", instructions="Is it short?",
                              rating_scale=[{"definition": "long", "value": 1}, {"definition": "short", "value": 5}]))

    assert [CORRECTNESS.score(level) for level in CORRECTNESS.levels] == [0.0, 0.5, 1.0]
    assert [custom.score(level) for level in custom.levels] == [1.0, 5.0]
    assert custom.metric == "judge_brevity"


def test_the_judge_prompt_quotes_the_reference_only_for_rubrics_that_use_one():
    helpfulness = rubric_of(Rubric(name="helpfulness"))

    with_ref = judge_prompt(CORRECTNESS, question="Capital of France?", output="Paris", references=["Paris", "paris"])
    without = judge_prompt(helpfulness, question="Capital of France?", output="Paris", references=["Paris"])

    assert "<reference_answer>\nParis OR paris\n</reference_answer>" in with_ref
    assert "<reference_answer>" not in without and "7. above and beyond" in without
    assert with_ref.rstrip().endswith("where <number> is one of 1 to 3 from the scale above.")


def test_the_fast_engine_rates_a_judge_prompt_by_the_references_words_in_the_response():
    engine = FastTextEngine()

    def rate(output: str) -> float:
        prompt = judge_prompt(CORRECTNESS, question="Who wrote Hamlet?", output=output, references=["William Shakespeare"])
        [result] = engine.generate([TextRequest(messages=(("user", prompt),), max_tokens=256)])
        level, why = parse_rating(CORRECTNESS, result.text)
        assert why is None
        return CORRECTNESS.score(level)

    assert (rate("It was William Shakespeare."), rate("Shakespeare"), rate("I am not sure.")) == (1.0, 0.5, 0.0)


def test_a_judge_config_is_accepted_and_its_metrics_can_decide():
    cfg = config(judge={"model_id": NOVA, "rubrics": [{"name": "correctness"}, {"name": "tone", "instructions": "Kind?",
                                                                               "rating_scale": [
                                                                                   {"definition": "rude", "value": 0},
                                                                                   {"definition": "kind", "value": 1}]}]},
                 selection={"primary": "judge_correctness"})

    assert cfg.judge_metric_names == ["judge_correctness", "judge_tone"] and cfg.primary_metric == "judge_correctness"


@pytest.mark.parametrize("judge,error", [
    ({"model_id": NOVA, "rubrics": [{"name": "correctness"}, {"name": "correctness"}]}, "'correctness' named twice"),
    ({"model_id": NOVA, "rubrics": [{"name": "x", "instructions": "?", "rating_scale": [{"definition": "a", "value": 1}]}]},
     "judge.rubrics.0.rating_scale: a rating scale needs at least two levels"),
    ({"model_id": "acme.gpt-9", "rubrics": [{"name": "correctness"}]}, "judge.model_id"),
])
def test_a_bad_judge_config_names_the_field(judge, error):
    with pytest.raises(InvalidRunSpec, match=error):
        config(judge=judge)


# --- scoring with the judge's answers ----------------------------------------------------------------------
def _judged(tmp_path: Path, rows: list[tuple[int, str, str | None, str | None]]) -> _Verdicts:
    path = tmp_path / "judge.parquet"
    pq.write_table(pa.table({INDEX: [r[0] for r in rows], RUBRIC: [r[1] for r in rows],
                             "output": [r[2] for r in rows], "error": [r[3] for r in rows]}), path)
    return _Verdicts(pq.ParquetFile(path).iter_batches(batch_size=2, columns=[INDEX, RUBRIC, "output", "error"]), None)


def test_judge_scores_fill_each_answered_pair_and_an_unreadable_rating_is_missing_not_zero(tmp_path: Path):
    verdicts = {"lite": _judged(tmp_path, [(0, "correctness", "Rating: 3", None), (1, "correctness", "no idea", None),
                                           (3, "correctness", None, "500: judge throttled")])}
    rows = [RecordRow(index=i, input=f"q{i}", target="a", models={"lite": ModelAnswer(output="a")}) for i in (0, 1, 3)]
    rows.insert(2, RecordRow(index=2, input="q2", target="a", models={"lite": ModelAnswer(error="generation failed")}))
    unrated = {"lite": {"correctness": 0}}

    out = _with_judgements(rows, verdicts, [CORRECTNESS], unrated)

    scores = [r.models["lite"].scores.get("judge_correctness") for r in out]
    assert scores == [1.0, None, None, None]
    assert "holds no rating" in out[1].models["lite"].judge_error
    assert out[2].models["lite"].judge_error is None, "a failed generation is not judged"
    assert "judge throttled" in out[3].models["lite"].judge_error
    assert unrated == {"lite": {"correctness": 2}}


# --- parent and children: the judge stage, the probe, cancelling -------------------------------------------
@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(workdir=tmp_path / "work")


class FakeModels:
    async def check(self, model_id: str) -> None:
        return None

    async def base_model(self, model_id: str) -> str:
        return MICRO


async def _parent(settings: Settings, cfg) -> tuple[FakeStore, FakeQueues, FakeObjects]:
    store, queues = FakeStore(), FakeQueues()
    objects = FakeObjects({DATASET: b"".join(orjson.dumps({"question": f"Who is {i}?", "answer": f"name{i}"}) + b"\n"
                                             for i in range(4))})
    await start_run(StartRun(run_id=PARENT, kind="evaluate", evaluation=cfg, input_uri=DATASET, origin="cli",
                             source_key=f"cli:{PARENT}"),
                    store=store, queues=queues, objects=objects, runtime=FakeRuntime(), settings=settings,
                    models=FakeModels())
    return store, queues, objects


async def _children_answered(store: FakeStore, queues: FakeQueues, objects: FakeObjects, settings: Settings,
                             outputs: dict[str, list[str | None]]) -> None:
    """Every child run SUCCEEDED with a result file of these outputs (None: that generation failed)."""
    for start in queues.to("preprocess"):
        name = start.spec.name.rsplit("/", 1)[-1]
        uri = layout.result_uri(settings, start.run_id, "parquet")
        answers = outputs[name]
        buffer = io.BytesIO()
        pq.write_table(pa.table({"output": [a or "" for a in answers], "error": [None if a else "500: boom" for a in answers],
                                 "input_tokens": [3] * len(answers), "output_tokens": [2] * len(answers)}), buffer)
        objects.put(uri, buffer.getvalue())
        await store.create_run(Run(run_id=start.run_id, status="SUCCEEDED", spec=start.spec, input_uri=start.input_uri,
                                   origin="child", source_key=start.source_key, parent_run_id=PARENT, result_uri=uri))
    queues.sent.clear()


async def _collect(store, queues, objects, settings, runtime=None) -> Run:
    await collect_run(CollectRun(run_id=PARENT), store=store, queues=queues, objects=objects,
                      runtime=runtime or FakeRuntime(), settings=settings)
    return await store.get_run(PARENT)


async def test_once_every_model_answered_the_judge_stage_starts_one_judge_run_per_model_once(settings):
    cfg = config(judge={"model_id": NOVA, "rubrics": [{"name": "correctness"}, {"name": "helpfulness"}]})
    store, queues, objects = await _parent(settings, cfg)
    await _children_answered(store, queues, objects, settings,
                             {"lite": ["name0", "name1", None, "name3"], "micro": [None] * 4})

    parent = await _collect(store, queues, objects, settings)
    again = await _collect(store, queues, objects, settings)

    judge_id = judge_run_id(PARENT, "lite")
    assert parent.status == "RUNNING" and parent.judges == {"lite": judge_id}, "micro answered nothing to judge"
    [start] = queues.to("preprocess")
    assert (start.run_id, start.parent_run_id, start.spec.model_id, start.spec.template) == (
        judge_id, PARENT, NOVA, "{{ input }}")
    rows = [orjson.loads(line) for line in objects.objects[judge_dataset_uri(settings, PARENT, "lite")].splitlines()]
    assert [(r[INDEX], r[RUBRIC]) for r in rows] == [(i, rubric) for i in (0, 1, 3) for rubric in
                                                     ("correctness", "helpfulness")]
    assert "<response>\nname1\n</response>" in rows[2]["input"] and "<reference_answer>\nname1" in rows[2]["input"]
    assert again.judges == parent.judges and len(queues.to("preprocess")) == 1


async def test_the_latency_probe_sends_the_first_records_as_each_model_would_and_keeps_p50_and_p90(settings):
    store, queues, objects = await _parent(settings, config(latency_probe=3))
    await _children_answered(store, queues, objects, settings, {"lite": ["a"] * 4, "micro": ["b"] * 4})
    parent = await store.get_run(PARENT)
    children = {name: await store.get_run(run_id) for name, run_id in parent.children.items()}
    runtime = FakeRuntime()

    latency = await probe_latency(parent, children, runtime=runtime, objects=objects, settings=settings)

    assert sorted(latency) == ["lite", "micro"] and all(v["n"] == 3 and v["p50_ms"] <= v["p90_ms"] for v in latency.values())
    assert sorted(model for model, _ in runtime.calls) == [NOVA] * 3 + [MICRO] * 3
    assert [body["messages"][0]["content"][0]["text"] for model, body in runtime.calls if model == NOVA] == [
        "Who is 0?", "Who is 1?", "Who is 2?"]


def test_latency_figures_are_the_mean_and_interpolated_percentiles():
    assert latency_figures([10, 20, 30, 40, 50]) == {"n": 5, "mean_ms": 30.0, "p50_ms": 30.0, "p90_ms": 46.0}
    assert latency_figures([]) is None


async def test_cancelling_an_evaluation_cancels_its_children_and_it_ends_cancelled_once_they_have(settings):
    store, queues, objects = await _parent(settings, config())
    starts = queues.to("preprocess")
    for start in starts:
        await store.create_run(Run(run_id=start.run_id, status="RUNNING", spec=start.spec, input_uri=start.input_uri,
                                   origin="child", source_key=start.source_key, parent_run_id=PARENT))
    queues.sent.clear()

    await cancel_run(CancelRun(run_id=PARENT), store=store, bedrock=FakeBatchJobs(), queues=queues)

    assert (await store.get_run(PARENT)).status == "CANCELLING"
    assert sorted(m.run_id for m in queues.to("submit")) == sorted(s.run_id for s in starts)
    assert (await _collect(store, queues, objects, settings)).status == "CANCELLING", "children still running"
    for start in starts:
        child = await store.get_run(start.run_id)
        await store.move_run(await store.move_run(child, "CANCELLING"), "CANCELLED")
    ended = await _collect(store, queues, objects, settings)
    await _collect(store, queues, objects, settings)
    assert ended.status == "CANCELLED" and "nothing was scored" in ended.error
    assert [type(m) for m in queues.to("notify")] == [RunFinished], "one email"


async def test_a_cancel_waits_for_a_child_that_is_still_being_created(settings):
    store, queues, objects = await _parent(settings, config())

    with pytest.raises(RetryableError, match="being created"):
        await cancel_run(CancelRun(run_id=PARENT), store=store, bedrock=FakeBatchJobs(), queues=queues)
    assert (await store.get_run(PARENT)).status == "CANCELLING"


async def test_an_evaluation_cancelled_while_staging_starts_no_child(settings):
    store, queues = FakeStore(), FakeQueues()
    objects = FakeObjects({DATASET: b'{"question": "q?", "answer": "a"}\n'})
    await store.create_run(Run(run_id=PARENT, kind="evaluate", status="CANCELLING", cancel_requested=True, spec=None,
                               evaluation=config(), input_uri=DATASET, origin="cli", source_key=f"cli:{PARENT}"))
    from services.preprocess.kinds import StartPorts
    from services.preprocess.kinds.evaluate import start

    run = await store.get_run(PARENT)
    await start(run, ports=StartPorts(store=store, queues=queues, objects=objects, runtime=FakeRuntime(),
                                      settings=settings, models=FakeModels()))

    assert queues.to("preprocess") == [] and (await store.get_run(PARENT)).children == {}
    assert (await _collect(store, queues, objects, settings)).status == "CANCELLED"


# --- the watchdog waits for the judge's runs and for children stopping -------------------------------------
async def _quiet_evaluation(store: FakeStore, status: str, *, judge_status: str) -> None:
    import datetime as dt

    from shared.domain.spec import RunSpec

    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    spec = RunSpec(model_id=NOVA, template="{{ input }}")
    done, judging = "c" * 32, "d" * 32
    await store.create_run(Run(run_id=done, status="SUCCEEDED", spec=spec, input_uri="s3://quarry-work/runs/x/d.jsonl",
                               origin="child", source_key="child:a", parent_run_id=PARENT, notified_at=old,
                               updated_at=old))
    await store.create_run(Run(run_id=judging, status=judge_status, spec=spec, input_uri="s3://quarry-work/runs/x/j.jsonl",
                               origin="child", source_key="judge:a", parent_run_id=PARENT, updated_at=old))
    await store.create_run(Run(run_id=PARENT, kind="evaluate", status=status, spec=None, evaluation=config(),
                               input_uri=DATASET, origin="cli", source_key="cli:p", children={"lite": done},
                               judges={"lite": judging}, updated_at=old, created_at=old))


@pytest.mark.parametrize("status", ["RUNNING", "CANCELLING"])
async def test_the_watchdog_leaves_an_evaluation_waiting_on_its_judge_or_a_stopping_child_alone(status, tmp_path):
    from shared.watchdog import sweep

    store, queues = FakeStore(), FakeQueues()
    await _quiet_evaluation(store, status, judge_status="RUNNING")
    settings = Settings(workdir=tmp_path, stall_after_s=60, max_redrives=1)

    await sweep(store=store, queues=queues, bedrock=FakeBatchJobs(), settings=settings)

    parent = await store.get_run(PARENT)
    assert parent.status == status and parent.stalled is None
    assert [m for _, m, _ in queues.sent if m.run_id == PARENT] == [], "the children are watched as runs themselves"
