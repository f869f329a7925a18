"""End to end on the local stack (fast engine): an evaluation of three models on a TriviaQA-shaped
dataset, one of them a provisioned throughput of a custom model, from a config dropped under
evaluations/; then the same evaluation again, answered entirely from the response cache."""
from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import boto3
import pytest
import yaml

from shared.adapters.aws import async_clients
from shared.adapters.registry import Registry
from shared.settings import Settings
from tests.e2e.conftest import control, latest_runs, load_run, mail_about, wait_until

SAMPLE = Path(__file__).resolve().parents[2] / "infra" / "demo" / "triviaqa_sample.jsonl"
ROWS = 300
BASE = "amazon.nova-micro-v1:0"
ROLE = "arn:aws:iam::123456789012:role/quarry-bedrock-batch"


def _records() -> list[dict]:
    if not SAMPLE.exists():
        pytest.skip(f"{SAMPLE} (the shipped TriviaQA sample) is absent")
    return [json.loads(line) for line in SAMPLE.read_text().splitlines()[:ROWS]]


def _tuned_pt(bedrock, s3, records: list[dict]) -> str:
    """A provisioned throughput of a custom model fine-tuned (fast trainer) on the questions' answers:
    on these questions it answers right, where the base models only echo."""
    key = f"training/trivia-{uuid.uuid4().hex[:6]}.jsonl"
    s3.put_object(Bucket="quarry-inputs", Key=key, Body="".join(
        json.dumps({"prompt": r["question"], "completion": r["answer"].split("<OR>")[0]}) + "\n" for r in records))
    job = bedrock.create_model_customization_job(
        jobName=f"trivia-{uuid.uuid4().hex[:8]}", customModelName=f"trivia-{uuid.uuid4().hex[:8]}", roleArn=ROLE,
        baseModelIdentifier=BASE, trainingDataConfig={"s3Uri": f"s3://quarry-inputs/{key}"},
        outputDataConfig={"s3Uri": "s3://quarry-work/customization/"}, hyperParameters={"epochCount": "1"})
    done = wait_until(lambda: (j := bedrock.get_model_customization_job(jobIdentifier=job["jobArn"]))["status"]
                      in ("Completed", "Failed") and j, timeout=120, what="the customization job")
    assert done["status"] == "Completed", done.get("failureMessage")
    pt = bedrock.create_provisioned_model_throughput(provisionedModelName=f"trivia-{uuid.uuid4().hex[:6]}",
                                                     modelId=done["outputModelArn"], modelUnits=1)
    arn = pt["provisionedModelArn"]
    wait_until(lambda: bedrock.get_provisioned_model_throughput(provisionedModelId=arn)["status"] == "InService",
               timeout=60, what="the provisioned throughput")
    return arn


def _bedrock_jobs(bedrock) -> int:
    return len(bedrock.list_model_invocation_jobs(maxResults=1000)["invocationJobSummaries"])


def _finished_evaluation(config_uri: str, timeout: float = 240):
    return wait_until(lambda: next((r for r in latest_runs() if r.kind == "evaluate" and r.source_key.startswith(config_uri)
                                    and r.terminal and r.notified_at), None),
                      timeout=timeout, what=f"a finished evaluation for {config_uri}")


def _object(s3, uri: str) -> bytes:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def evaluation(stack, aws):
    records = _records()
    bedrock = boto3.client("bedrock")
    dataset_key = f"datasets/trivia-{uuid.uuid4().hex[:6]}.jsonl"
    aws["s3"].put_object(Bucket="quarry-inputs", Key=dataset_key,
                         Body="".join(json.dumps(r) + "\n" for r in records).encode())
    tuned = _tuned_pt(bedrock, aws["s3"], records)
    group = f"trivia-{uuid.uuid4().hex[:6]}"
    config = {
        "name": "trivia", "dataset": {"uri": f"s3://quarry-inputs/{dataset_key}"},
        "models": [{"name": "haiku", "model_id": "anthropic.claude-3-haiku-20240307-v1:0"},
                   {"name": "nova", "model_id": "amazon.nova-lite-v1:0"},
                   {"name": "tuned", "model_id": tuned}],
        "metrics": ["factual_knowledge", "f1", "exact_match"], "params": {"temperature": 0, "max_tokens": 64},
        "selection": {"primary": "factual_knowledge", "min_effect": 0.05}, "registry": group,
    }
    runs = []
    jobs = [_bedrock_jobs(bedrock)]
    for attempt in ("first", "again"):
        key = f"evaluations/trivia-{attempt}-{uuid.uuid4().hex[:6]}.yaml"
        aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body=yaml.safe_dump(config).encode())
        runs.append(_finished_evaluation(f"s3://quarry-inputs/{key}"))
        jobs.append(_bedrock_jobs(bedrock))
    return {"runs": runs, "jobs": jobs, "group": group, "tuned": tuned, "records": records}


def test_every_record_is_scored_for_every_model_and_the_tuned_model_wins(evaluation, aws):
    run = evaluation["runs"][0]
    assert run.status == "SUCCEEDED", run.error
    results = json.loads(_object(aws["s3"], run.summary["results_uri"]))
    assert [m["name"] for m in results["models"]] == ["haiku", "nova", "tuned"]
    assert all(m["status"] == "ok" and m["records"] == ROWS and m["errors"] == 0 for m in results["models"])
    for model in results["models"]:
        fk = model["metrics"]["factual_knowledge"]
        assert fk["n"] == ROWS and fk["ci"]["low"] <= fk["mean"] <= fk["ci"]["high"]
    records = [json.loads(line) for line in _object(aws["s3"], run.summary["records_uri"]).splitlines()]
    assert [r["index"] for r in records] == list(range(ROWS))
    assert all(set(r["models"]) == {"haiku", "nova", "tuned"} and
               all(a["scores"]["factual_knowledge"] is not None for a in r["models"].values()) for r in records)
    selection = results["selection"]
    assert selection["outcome"] == "winner" and selection["winner"] == "tuned"
    pairs = {(c["a"], c["b"]): c for c in results["comparisons"] if c["metric"] == "factual_knowledge"}
    assert len(pairs) == 3 and all(c["test"] == "mcnemar_exact" for c in pairs.values())
    assert b"<html" in _object(aws["s3"], run.summary["report_uri"])[:200].lower()


def test_the_email_names_the_winner_its_margin_and_every_models_cost(evaluation, stack):
    run = evaluation["runs"][0]
    mail = mail_about(stack, run.run_id)
    assert "winner tuned" in mail["subject"]
    assert "Winner:  tuned" in mail["body"] and "95% CI" in mail["body"] and run.summary["report_uri"] in mail["body"]
    assert all(name in mail["body"] for name in ("haiku", "nova", "tuned"))
    assert sum("Quarry evaluation" in m["subject"] for m in [mail]) == 1


def test_children_send_no_email_of_their_own(evaluation, stack):
    from infra.local_stack.mailsink import read_mail

    run = evaluation["runs"][0]
    children = set(run.children.values())
    assert not [m for m in read_mail(stack.config.maildir) if any(child in m["body"] for child in children)]


def test_the_registry_holds_every_model_and_the_champion(evaluation):
    async def read():
        settings = Settings()
        async with async_clients(settings, "dynamodb") as clients:
            registry = Registry(clients["dynamodb"], settings.table)
            return await registry.entries(evaluation["group"]), await registry.champion(evaluation["group"])

    entries, champion = asyncio.run(read())
    first = evaluation["runs"][0]
    assert {e["name"] for e in entries if e["run_id"] == first.run_id} == {"haiku", "nova", "tuned"}
    assert all(e["dataset_hash"] and e["config_hash"] for e in entries)
    assert champion["model_id"] == evaluation["tuned"] and champion["name"] == "tuned"


def test_a_second_identical_evaluation_is_answered_entirely_from_the_cache(evaluation, aws):
    before, after_first, after_second = evaluation["jobs"]
    again = evaluation["runs"][1]
    assert after_first - before == 2, "one batch job per base model (the provisioned model runs on demand)"
    assert after_second == after_first, "no new Bedrock job"
    assert again.status == "SUCCEEDED" and again.summary["pairs_from_cache"] == 3 * ROWS
    first = json.loads(_object(aws["s3"], evaluation["runs"][0].summary["results_uri"]))
    second = json.loads(_object(aws["s3"], again.summary["results_uri"]))
    assert [m["metrics"] for m in second["models"]] == [m["metrics"] for m in first["models"]]
    assert second["selection"]["winner"] == "tuned"


def _answers_on_bus(aws, name: str) -> str:
    queue = aws["sqs"].create_queue(QueueName=name)["QueueUrl"]
    arn = aws["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws["events"].put_rule(Name=name, EventBusName="quarry-bus", EventPattern=json.dumps(
        {"source": ["quarry"], "detail-type": ["Quarry Evaluation Completed", "Quarry Evaluation Failed"]}))
    aws["events"].put_targets(Rule=name, EventBusName="quarry-bus", Targets=[{"Id": "q", "Arn": arn}])
    return queue


def _answer(aws, queue: str, request_id: str) -> dict:
    def received():
        for message in aws["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                                  WaitTimeSeconds=1).get("Messages", []):
            event = json.loads(message["Body"])
            if event["detail"].get("request_id") == request_id:
                return event
        return None
    return wait_until(received, timeout=120, what=f"the answer to request {request_id}")


def test_quarry_evaluate_quick_form_follows_an_evaluation_to_its_outcome(stack, tmp_path, capsys):
    from services.cli.main import main as quarry

    data = tmp_path / "trivia.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _records()[:40]))
    code = 0
    try:
        quarry(["evaluate", "--dataset", str(data), "--model", "anthropic.claude-3-haiku-20240307-v1:0",
                "--model", "amazon.nova-lite-v1:0", "--metric", "f1", "--metric", "exact_match", "--follow"])
    except SystemExit as ended:  # only a followed evaluation that did not succeed exits non-zero
        code = ended.code
    captured = capsys.readouterr()
    run_id = captured.out.strip().splitlines()[0]
    run = next(r for r in latest_runs() if r.run_id == run_id)
    assert code == 0 and run.status == "SUCCEEDED" and run.origin == "cli"
    assert run.summary["records"] == 40 and run.summary["outcome"] in ("winner", "no_significant_difference")
    assert "Report:" in captured.err


def test_an_evaluation_requested_event_is_answered_with_its_request_id(stack, aws):
    queue = _answers_on_bus(aws, f"eval-answers-{uuid.uuid4().hex[:6]}")
    key = f"datasets/bedrock-shape-{uuid.uuid4().hex[:6]}.jsonl"
    aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body="".join(
        json.dumps({"prompt": r["question"], "referenceResponse": r["answer"], "category": "trivia" if i % 2 else "misc"})
        + "\n" for i, r in enumerate(_records()[:30])).encode())
    request_id = f"eval-{uuid.uuid4().hex[:8]}"
    config = {"dataset": {"uri": f"s3://quarry-inputs/{key}"}, "task": "qa",
              "models": [{"name": "a", "model_id": "amazon.nova-lite-v1:0"},
                         {"name": "b", "model_id": "amazon.nova-lite-v1:0", "system": "Answer in one word."}],
              "params": {"temperature": 0}}
    aws["events"].put_events(Entries=[{"Source": "acme.mlops", "DetailType": "Quarry Evaluation Requested",
                                       "EventBusName": "quarry-bus",
                                       "Detail": json.dumps({"config": config, "request_id": request_id})}])

    answer = _answer(aws, queue, request_id)
    assert answer["detail-type"] == "Quarry Evaluation Completed"
    summary = answer["detail"]["summary"]
    assert summary["records"] == 30 and set(summary["models"]) == {"a", "b"} and summary["report_uri"]


def test_a_config_naming_a_missing_target_column_fails_at_once_with_an_email(stack, aws):
    key = f"datasets/no-target-{uuid.uuid4().hex[:6]}.jsonl"
    aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body=b'{"question": "Who wrote Hamlet?"}\n')
    config_key = f"evaluations/no-target-{uuid.uuid4().hex[:6]}.yaml"
    aws["s3"].put_object(Bucket="quarry-inputs", Key=config_key, Body=yaml.safe_dump({
        "dataset": {"uri": f"s3://quarry-inputs/{key}"},
        "models": [{"name": "a", "model_id": "amazon.nova-lite-v1:0"}]}).encode())

    run = _finished_evaluation(f"s3://quarry-inputs/{config_key}", timeout=60)
    assert run.status == "FAILED" and f"s3://quarry-inputs/{key}" in run.error and "no target column" in run.error
    assert "failed" in mail_about(stack, run.run_id)["subject"]


def test_a_config_with_an_unknown_field_and_duplicate_names_fails_naming_the_field(stack, aws):
    config_key = f"evaluations/bad-{uuid.uuid4().hex[:6]}.yaml"
    aws["s3"].put_object(Bucket="quarry-inputs", Key=config_key, Body=yaml.safe_dump({
        "dataset": {"uri": "s3://quarry-inputs/x.jsonl", "colour": "red"},
        "models": [{"name": "a", "model_id": "amazon.nova-lite-v1:0"}]}).encode())

    run = _finished_evaluation(f"s3://quarry-inputs/{config_key}", timeout=60)
    assert run.status == "FAILED" and "dataset: unknown field(s): colour" in run.error
    assert f"s3://quarry-inputs/{config_key}" in run.error


# --- a controlled difference, LLM-as-judge and the latency probe (one evaluation) -------------------------
CONTROLLED_ROWS = 200
WRONG_RATE = 0.3


def _open_book() -> list[dict]:
    """TriviaQA questions that carry their answer ("... The answer is Paris."): the fast engine echoes
    the question, so every model answers right unless a wrong-answer fault replaces its answer."""
    import re

    rows = []
    for r in _records():
        answer = r["answer"].split("<OR>")[0].strip()
        if re.fullmatch(r"[A-Za-z][A-Za-z0-9 ]{1,30}", answer):
            rows.append({"question": f"{r['question']} The answer is {answer}.", "answer": answer})
    return rows[:CONTROLLED_ROWS]


@pytest.fixture(scope="module")
def controlled(stack, aws):
    """nova-micro (the cheapest) gets 30% of its answers replaced by a wrong one; nova-lite twice under two
    names and nova-pro answer exactly alike. The judge (nova-lite) rates correctness; 5 probe calls each."""
    records = _open_book()
    assert len(records) == CONTROLLED_ROWS
    key = f"datasets/open-book-{uuid.uuid4().hex[:6]}.jsonl"
    aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body="".join(json.dumps(r) + "\n" for r in records).encode())
    config = {
        "name": "controlled", "dataset": {"uri": f"s3://quarry-inputs/{key}"},
        "models": [{"name": "lite", "model_id": "amazon.nova-lite-v1:0"},
                   {"name": "lite_again", "model_id": "amazon.nova-lite-v1:0"},
                   {"name": "pro", "model_id": "amazon.nova-pro-v1:0"},
                   {"name": "micro", "model_id": "amazon.nova-micro-v1:0"}],
        "metrics": ["factual_knowledge", "f1"], "params": {"temperature": 0, "max_tokens": 64},
        "judge": {"model_id": "amazon.nova-lite-v1:0", "rubrics": [{"name": "correctness"}]},
        "selection": {"primary": "factual_knowledge", "min_effect": 0.05},
        "latency_probe": 5, "cache": "off",  # the injected wrong answers must not reach the shared cache
    }
    fault = control(stack, "POST", "/local-bedrock-api/faults",
                    {"model_id": "amazon.nova-micro-v1:0", "wrong_answer_rate": WRONG_RATE})
    try:
        config_key = f"evaluations/controlled-{uuid.uuid4().hex[:6]}.yaml"
        aws["s3"].put_object(Bucket="quarry-inputs", Key=config_key, Body=yaml.safe_dump(config).encode())
        run = _finished_evaluation(f"s3://quarry-inputs/{config_key}", timeout=300)
    finally:
        control(stack, "DELETE", f"/local-bedrock-api/faults/{fault['fault_id']}")
    assert run.status == "SUCCEEDED", run.error
    results = json.loads(_object(aws["s3"], run.summary["results_uri"]))
    return {"run": run, "results": results, "records": records}


def _pair(results: dict, a: str, b: str, metric: str = "factual_knowledge") -> dict:
    return next(c for c in results["comparisons"] if c["metric"] == metric and {c["a"], c["b"]} == {a, b})


def test_a_real_difference_between_two_otherwise_equal_models_is_found(controlled):
    results = controlled["results"]
    means = {m["name"]: m["metrics"]["factual_knowledge"]["mean"] for m in results["models"]}
    assert means["lite"] == 1.0 and 1 - WRONG_RATE - 0.1 <= means["micro"] <= 1 - WRONG_RATE + 0.1
    worse = _pair(results, "lite", "micro")
    assert worse["significant"] and worse["p_holm"] < 0.001
    assert {worse["a_only"], worse["b_only"]} == {0, round(CONTROLLED_ROWS * (1 - means["micro"]))}
    assert "micro" not in results["selection"]["tied"], "the cheapest model is not chosen when it is worse"


def test_two_truly_equal_models_are_tied_and_the_cheaper_is_recommended(controlled):
    selection = controlled["results"]["selection"]
    same = _pair(controlled["results"], "lite", "lite_again")
    alike = _pair(controlled["results"], "lite", "pro")
    assert (same["a_only"], same["b_only"], same["significant"]) == (0, 0, False)
    assert (alike["a_only"], alike["b_only"], alike["significant"]) == (0, 0, False)
    assert selection["outcome"] == "no_significant_difference"
    assert set(selection["tied"]) == {"lite", "lite_again", "pro"}
    assert selection["recommended"] == "lite", "nova-lite costs less than nova-pro for the same answers"


def test_the_judge_scores_every_answer_as_a_second_stage_and_its_metric_is_compared(controlled, aws):
    run, results = controlled["run"], controlled["results"]
    judge = results["judge"]
    assert judge["model_id"] == "amazon.nova-lite-v1:0" and [r["metric"] for r in judge["rubrics"]] == ["judge_correctness"]
    assert set(judge["runs"]) == {"lite", "lite_again", "pro", "micro"}
    assert all(counts == {"correctness": 0} for counts in judge["unrated"].values())
    scores = {m["name"]: m["metrics"]["judge_correctness"] for m in results["models"]}
    assert scores["lite"]["mean"] == 1.0 and scores["lite"]["n"] == CONTROLLED_ROWS
    assert scores["micro"]["mean"] < 0.8 and _pair(results, "lite", "micro", "judge_correctness")["significant"]
    for judge_run in judge["runs"].values():
        child, jobs, _ = load_run(judge_run)
        assert child.parent_run_id == run.run_id and child.status == "SUCCEEDED" and child.total_rows == CONTROLLED_ROWS
    records = [json.loads(line) for line in _object(aws["s3"], run.summary["records_uri"]).splitlines()]
    wrong = [r for r in records if r["models"]["micro"]["output"] == "I am not sure."]
    # The fast judge rates by the reference's words found in the answer: "I am not sure." holds none
    # of most references (Charles I shares one word of two: partially correct).
    def shares_a_word(reference: str) -> bool:
        return bool({w.lower() for w in reference.split()} & {"i", "am", "not", "sure"})

    assert wrong and all(r["models"]["micro"]["scores"]["judge_correctness"] == (0.5 if shares_a_word(r["target"]) else 0.0)
                         for r in wrong)
    assert b"judge_correctness" in _object(aws["s3"], run.summary["report_uri"])


def test_the_latency_probe_is_in_the_results_and_the_pareto_front(controlled):
    results = controlled["results"]
    for model in results["models"]:
        latency = model["latency"]
        assert latency["n"] == 5 and 0 < latency["p50_ms"] <= latency["p90_ms"]
    assert all(p["latency_ms"] is not None for p in results["pareto"])
    assert controlled["run"].summary["models"]["micro"]["latency_ms"]["n"] == 5


def test_the_controlled_evaluation_sends_one_email(controlled, stack):
    from infra.local_stack.mailsink import read_mail

    run = controlled["run"]
    mails = [m for m in read_mail(stack.config.maildir) if run.run_id in m["body"]]
    assert len(mails) == 1 and "no significant difference" in mails[0]["subject"]


# --- cancel -----------------------------------------------------------------------------------------------------
def test_cancelling_an_evaluation_cancels_its_children_and_it_ends_cancelled_with_one_email(stack, aws):
    from infra.local_stack.mailsink import read_mail
    from services.cli.main import main as quarry

    key = f"datasets/cancel-{uuid.uuid4().hex[:6]}.jsonl"
    aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body="".join(
        json.dumps({"question": f"What is {i} times {i}? {uuid.uuid4().hex}", "answer": str(i * i)}) + "\n"
        for i in range(20_000)).encode())
    # Each model's next job stalls a tenth of the way in until it is stopped: the children are still
    # running when the cancel comes, however fast this machine answers 20,000 records.
    for model_id in ("amazon.nova-lite-v1:0", "anthropic.claude-3-haiku-20240307-v1:0"):
        control(stack, "POST", "/local-bedrock-api/faults",
                {"model_id": model_id, "stall_after_fraction": 0.1, "times": 1})
    config_key = f"evaluations/cancel-{uuid.uuid4().hex[:6]}.yaml"
    aws["s3"].put_object(Bucket="quarry-inputs", Key=config_key, Body=yaml.safe_dump({
        "dataset": {"uri": f"s3://quarry-inputs/{key}"}, "cache": "off", "params": {"temperature": 0},
        "models": [{"name": "a", "model_id": "amazon.nova-lite-v1:0"},
                   {"name": "b", "model_id": "anthropic.claude-3-haiku-20240307-v1:0"}]}).encode())
    source = f"s3://quarry-inputs/{config_key}"
    running = wait_until(lambda: next((r for r in latest_runs() if r.source_key.startswith(source)
                                       and r.status == "RUNNING"), None), timeout=120, what="a running evaluation")

    quarry(["cancel", running.run_id])
    run = _finished_evaluation(source, timeout=180)

    assert run.status == "CANCELLED" and "nothing was scored" in run.error
    for child_id in run.children.values():
        child, jobs, holders = load_run(child_id)
        assert child.status == "CANCELLED" and all(job.terminal for job in jobs) and holders == set()
    mails = [m for m in read_mail(stack.config.maildir) if run.run_id in m["body"]]
    assert len(mails) == 1 and "was cancelled" in mails[0]["subject"]
