"""The evaluate kind: its config, its dataset, how a parent starts its children, and how children
report back, against in-memory fakes of the ports."""
from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from services.notify.handlers import run_finished
from services.postprocess.handlers import collect_run
from services.preprocess.handlers import start_run
from services.preprocess.kinds.evaluate import child_run_id
from shared.dataplane.cached_records import cached_byte_range, rows_of_chunks, split_cached
from shared.dataplane.eval_dataset import stage_dataset
from shared.dataplane.readers import InputError
from shared.dataplane.splitter import plan_chunks
from shared.domain import layout
from shared.domain.evaluation import parse_config
from shared.domain.response_cache import response_key
from shared.domain.runs import Run
from shared.domain.spec import RunSpec
from shared.errors import InvalidRunSpec
from shared.messages import CollectRun, RunFinished, StartRun
from shared.settings import Settings
from tests.unit.fakes import FakeNotifier, FakeObjects, FakeQueues, FakeRuntime, FakeStore

PARENT = "0123456789abcdef0123456789abcdef"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
PT = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123"
DATASET = "s3://quarry-inputs/datasets/trivia.jsonl"


def config(**changes):
    raw = {"dataset": {"uri": DATASET}, "params": {"temperature": 0},
           "models": [{"name": "haiku", "model_id": HAIKU}, {"name": "tuned", "model_id": PT}]}
    raw.update(changes)
    return parse_config(raw, where="from test.yaml")


# --- the config -------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes,error", [
    ({"colour": "red"}, "colour"),
    ({"dataset": {"uri": DATASET, "colum": "q"}}, "dataset: unknown field(s): colum"),
    ({"models": [{"name": "a", "model_id": HAIKU}, {"name": "a", "model_id": HAIKU}]}, "two models are named 'a'"),
    ({"metrics": ["f1", "bertscore"]}, "unknown metric(s) 'bertscore'"),
    ({"models": [{"name": "a", "model_id": "acme.gpt-9"}]}, "models.0.model_id: model 'acme.gpt-9' belongs to no"),
    ({"selection": {"primary": "rougeL"}, "metrics": ["f1"]}, "selection.primary: 'rougeL' is not one of"),
    ({"judge": {"model_id": HAIKU, "rubrics": [{"name": "tone", "instructions": "Be kind"}]}}, "needs a rating_scale"),
    ({"judge": {"model_id": HAIKU, "rubrics": [{"name": "correctness"}]}, "selection": {"primary": "judge_tone"}},
     "selection.primary: 'judge_tone' is not one of"),
    ({"dataset": {"uri": DATASET, "limit": 5, "sample": 5}}, "either `limit`"),
    ({"params": {"temprature": 0}}, "params: unknown field(s): temprature"),
])
def test_given_a_bad_config_when_parsed_then_the_error_names_where_and_the_field(changes, error):
    with pytest.raises(InvalidRunSpec) as raised:
        config(**changes)

    assert "invalid evaluation config from test.yaml" in str(raw := raised.value) and error in str(raw)


def test_given_deterministic_decoding_then_the_cache_is_reused_and_otherwise_off_unless_asked():
    assert config().cache_for(config().models[0]) == "reuse"
    sampled = config(params={"temperature": 0.7})
    assert sampled.cache_for(sampled.models[0]) == "off"
    assert config(params={"temperature": 0.7}, cache="refresh").cache_for(sampled.models[0]) == "refresh"


def test_given_a_task_preset_then_its_metrics_are_used_and_the_first_is_primary():
    summarization = config(task="summarization")
    assert summarization.metric_names[0] == summarization.primary_metric == "rougeL"


def test_equal_configs_hash_equal_and_a_changed_one_differently():
    assert config().config_hash() == config().config_hash() != config(metrics=["f1"]).config_hash()


# --- the dataset ---------------------------------------------------------------------------------------
def stage(text: str, name: str = "s3://b/d.jsonl", **options):
    out = io.BytesIO()
    staged = stage_dataset(io.BytesIO(text.encode()), out, name=name, **options)
    return staged, [orjson.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("line,input_value,target", [
    ({"question": "Q?", "answer": "A<OR>B"}, "Q?", "A<OR>B"),
    ({"model_input": "Q?", "target_output": "A"}, "Q?", "A"),
    ({"prompt": "Q?", "referenceResponse": "A", "category": "c"}, "Q?", "A"),
    ({"prompt": "Q?", "record_id": "0000000000", "output": "A", "error": ""}, "Q?", "A"),
])
def test_known_dataset_shapes_need_no_mapping(line, input_value, target):
    staged, records = stage(orjson.dumps(line).decode() + "\n")

    assert records[0]["input"] == input_value and records[0]["quarry_target"] == target
    assert staged.rows == staged.used_rows == 1 and len(staged.content_hash) == 64


def test_a_template_renders_the_input_and_a_category_column_is_kept():
    _, records = stage("q,a,topic\nWhat is 1?,one,maths\n", name="s3://b/d.csv", template="Q: {{ q }}", target="a",
                       category="topic")

    assert records == [{"q": "What is 1?", "a": "one", "topic": "maths", "input": "Q: What is 1?",
                        "quarry_index": "0", "quarry_target": "one", "quarry_category": "maths"}]


def test_limit_takes_the_first_rows_and_sample_a_seeded_subset_in_file_order():
    text = "".join(orjson.dumps({"question": f"q{i}", "answer": str(i)}).decode() + "\n" for i in range(50))
    _, first = stage(text, limit=5)
    staged, sampled = stage(text, sample=10, seed=7)
    _, again = stage(text, sample=10, seed=7)

    assert [r["quarry_index"] for r in first] == ["0", "1", "2", "3", "4"]
    assert staged.rows == 50 and staged.used_rows == 10 and sampled == again
    indexes = [int(r["quarry_index"]) for r in sampled]
    assert indexes == sorted(indexes) and indexes != list(range(10))


def test_a_dataset_without_a_target_column_is_refused_naming_the_file_and_columns():
    with pytest.raises(InputError, match=r"s3://b/d.jsonl: no target column found .* columns are: question"):
        stage('{"question": "Q?"}\n')


# --- the response cache in the batch path ----------------------------------------------------------------
def test_cached_records_leave_the_spool_and_every_row_stays_in_exactly_one_chunk(tmp_path: Path):
    spool = tmp_path / "records.jsonl"
    bodies = [{"inputText": f"row {i}"} for i in range(10)]
    spool.write_bytes(b"".join(orjson.dumps({"recordId": f"{i:010d}", "modelInput": b}) + b"\n"
                               for i, b in enumerate(bodies)))
    cached = {response_key(HAIKU, bodies[i]) for i in (0, 3, 4, 9)}

    split = split_cached(spool, model_id=HAIKU, known=cached, workdir=tmp_path,
                         fetch=lambda keys: {k: {"results": [{"outputText": "cached"}]} for k in keys})
    plan = plan_chunks(split.sizes, min_records=2, max_records=3)
    chunks = rows_of_chunks(plan, split, total_rows=10)

    assert split.cached_count == 4 and split.rows.tolist() == [1, 2, 5, 6, 7, 8]
    assert chunks[0].first_row == 0 and chunks[-1].end_row == 10
    assert all(a.end_row == b.first_row for a, b in zip(chunks, chunks[1:]))
    assert sum(c.records for c in chunks) == 6
    spans = [cached_byte_range(split, c.first_row, c.end_row)[1] for c in chunks]
    assert sum(spans) == split.cached.stat().st_size


# --- parent and children ----------------------------------------------------------------------------------
class FakeModels:
    def __init__(self) -> None:
        self.checked: list[str] = []

    async def check(self, model_id: str) -> None:
        self.checked.append(model_id)

    async def base_model(self, model_id: str) -> str:
        return "amazon.nova-micro-v1:0"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(workdir=tmp_path / "work")


async def started_parent(settings: Settings):
    store, queues = FakeStore(), FakeQueues()
    objects = FakeObjects({DATASET: b"".join(orjson.dumps({"question": f"q{i}?", "answer": str(i)}) + b"\n"
                                             for i in range(5))})
    models = FakeModels()
    await start_run(StartRun(run_id=PARENT, kind="evaluate", evaluation=config(), input_uri=DATASET, origin="cli",
                             source_key=f"cli:{PARENT}"),
                    store=store, queues=queues, objects=objects, runtime=FakeRuntime(), settings=settings, models=models)
    return store, queues, objects, models


async def test_a_started_evaluation_stages_its_dataset_and_starts_one_child_run_per_model(settings):
    store, queues, objects, models = await started_parent(settings)

    parent = await store.get_run(PARENT)
    children = queues.to("preprocess")
    assert parent.status == "RUNNING" and parent.children == {"haiku": child_run_id(PARENT, "haiku"),
                                                              "tuned": child_run_id(PARENT, "tuned")}
    assert parent.dataset["used_rows"] == 5 and models.checked == [HAIKU, PT]
    assert [(c.run_id, c.parent_run_id, c.input_uri, c.spec.template) for c in children] == [
        (parent.children[name], PARENT, layout.dataset_uri(settings, PARENT), "{{ input }}") for name in ("haiku", "tuned")]
    tuned = children[1].spec
    assert tuned.model_id == PT and tuned.base_model_id == "amazon.nova-micro-v1:0" and tuned.cache == "reuse"
    assert len(objects.objects[layout.dataset_uri(settings, PARENT)].splitlines()) == 5


async def test_a_redelivered_evaluation_start_starts_no_second_set_of_children(settings):
    store, queues, objects, models = await started_parent(settings)

    await start_run(StartRun(run_id=PARENT, kind="evaluate", evaluation=config(), input_uri=DATASET, origin="cli",
                             source_key=f"cli:{PARENT}"),
                    store=store, queues=queues, objects=objects, runtime=FakeRuntime(), settings=settings, models=models)

    assert len(queues.to("preprocess")) == 2


async def test_a_finished_child_sends_no_email_and_asks_its_parent_to_collect(settings):
    store, queues, notifier = FakeStore(), FakeQueues(), FakeNotifier()
    child = Run(run_id="c" * 32, status="SUCCEEDED", spec=RunSpec(model_id=HAIKU, template="{{ input }}"),
                input_uri="s3://quarry-work/runs/x/dataset.jsonl", origin="child", source_key="child:x:a",
                parent_run_id=PARENT)
    await store.create_run(child)

    await run_finished(RunFinished(run_id=child.run_id, outcome="SUCCEEDED"), store=store, notifier=notifier,
                       queues=queues)

    assert notifier.emails == [] and notifier.events == []
    assert [m.run_id for m in queues.to("postprocess")] == [PARENT] and isinstance(queues.to("postprocess")[0], CollectRun)
    assert (await store.get_run(child.run_id)).notified_at is not None


async def test_an_evaluation_is_not_collected_while_a_child_is_still_running(settings):
    store, queues, objects, _ = await started_parent(settings)
    first = queues.to("preprocess")[0]
    await store.create_run(Run(run_id=first.run_id, status="SUCCEEDED", spec=first.spec, input_uri=first.input_uri,
                               origin="child", source_key=first.source_key, parent_run_id=PARENT))

    await collect_run(CollectRun(run_id=PARENT), store=store, queues=queues, objects=objects, runtime=FakeRuntime(),
                      settings=settings)

    assert (await store.get_run(PARENT)).status == "RUNNING" and queues.to("notify") == []
