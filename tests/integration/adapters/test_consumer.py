"""The consume loop on a real moto SQS: stale messages dropped, crashes logged with their run and
recorded, the last receive parked with its reason."""
from __future__ import annotations

import asyncio

import pytest
import structlog

from shared.adapters.aws import async_clients
from shared.consumer import Consumer
from shared.domain.runs import IllegalTransition
from shared.messages import SUBMIT_INBOX, SubmitJob, new_id
from shared.settings import Settings


@pytest.fixture
def logs():
    """Log lines as the services render them: with the context bound around each message."""
    capture = structlog.testing.LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    yield capture.entries
    structlog.reset_defaults()


@pytest.fixture
async def sqs(moto_env):
    async with async_clients(Settings(), "sqs") as clients:
        yield clients["sqs"]


async def a_queue(sqs, max_receives: int) -> tuple[str, str]:
    name = f"test-{new_id()[:8]}"
    dlq = (await sqs.create_queue(QueueName=f"{name}-dlq"))["QueueUrl"]
    arn = (await sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
    url = (await sqs.create_queue(QueueName=name, Attributes={
        "RedrivePolicy": f'{{"deadLetterTargetArn": "{arn}", "maxReceiveCount": {max_receives}}}'}))["QueueUrl"]
    return url, dlq


async def consume(sqs, url: str, dlq: str, handle, failures: list, *, until) -> None:
    async def on_failure(run_id: str, reason: str, fatal: bool) -> None:
        failures.append((run_id, reason, fatal))

    consumer = Consumer(sqs, queue_url=url, dlq_url=dlq, inbox=SUBMIT_INBOX, handle=handle, concurrency=1,
                        visibility_timeout_s=10, wait_s=1, on_failure=on_failure)
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(200):
            if await until():
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the consumer never got there")
    finally:
        consumer.stop()
        await task


async def count(sqs, url: str) -> int:
    attributes = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]))["Attributes"]
    return sum(int(v) for v in attributes.values())


async def test_a_message_that_makes_an_illegal_transition_is_dropped_not_retried(sqs, logs):
    url, dlq = await a_queue(sqs, max_receives=5)
    calls = []

    async def stale(message):
        calls.append(message)
        raise IllegalTransition("job cannot move from COMPLETED to SUBMITTING")

    await sqs.send_message(QueueUrl=url, MessageBody=SubmitJob(run_id=new_id(), job_key="00000-0").model_dump_json())
    await consume(sqs, url, dlq, stale, [], until=lambda: _true_after(calls))
    await asyncio.sleep(0.3)

    assert await count(sqs, url) == 0 and await count(sqs, dlq) == 0
    assert any(entry["event"] == "stale_message_dropped" for entry in logs)


async def _true_after(calls: list) -> bool:
    return bool(calls)


async def test_a_crash_is_logged_with_its_run_and_job_and_recorded_against_the_run(sqs, logs):
    url, dlq = await a_queue(sqs, max_receives=5)
    run_id = new_id()
    failures: list = []

    async def broken(message):
        raise KeyError("rows.parquet")

    await sqs.send_message(QueueUrl=url, MessageBody=SubmitJob(run_id=run_id, job_key="00003-0").model_dump_json())
    await consume(sqs, url, dlq, broken, failures, until=lambda: _true_after(failures))

    crashed = [entry for entry in logs if entry["event"] == "message_handler_crashed"]
    assert crashed and crashed[0]["run_id"] == run_id and crashed[0]["job_key"] == "00003-0"
    assert failures[0][0] == run_id and "rows.parquet" in failures[0][1] and failures[0][2] is False


async def test_on_its_last_receive_a_failing_message_is_parked_with_its_reason_and_logged(sqs, logs):
    url, dlq = await a_queue(sqs, max_receives=1)
    run_id = new_id()
    failures: list = []

    async def broken(message):
        raise ValueError("corrupt")

    await sqs.send_message(QueueUrl=url, MessageBody=SubmitJob(run_id=run_id, job_key="00000-0").model_dump_json())
    async def parked() -> bool:
        return await count(sqs, dlq) == 1

    await consume(sqs, url, dlq, broken, failures, until=parked)

    [message] = (await sqs.receive_message(QueueUrl=dlq, MessageAttributeNames=["All"]))["Messages"]
    assert "corrupt" in message["MessageAttributes"]["quarry_reason"]["StringValue"]
    assert any(e["event"] == "message_parked" and e.get("run_id") == run_id for e in logs)
    assert (run_id, True) in [(r, fatal) for r, _, fatal in failures], "a parked message is fatal for its run"


async def test_an_invalid_message_is_parked_with_where_it_failed_but_none_of_its_values(sqs, logs):
    url, dlq = await a_queue(sqs, max_receives=5)
    secret = "Summarize the patient's notes: {{ notes }}"
    # No job_key, and a seq that is prompt text: both fail; the reason must not quote the text.
    body = f'{{"type": "SubmitJob", "run_id": "{new_id()}", "seq": "{secret}"}}'
    await sqs.send_message(QueueUrl=url, MessageBody=body)

    async def parked() -> bool:
        return await count(sqs, dlq) == 1

    await consume(sqs, url, dlq, _never_called, [], until=parked)

    [message] = (await sqs.receive_message(QueueUrl=dlq, MessageAttributeNames=["All"]))["Messages"]
    reason = message["MessageAttributes"]["quarry_reason"]["StringValue"]
    assert "SubmitJob.job_key: missing" in reason and "SubmitJob.seq: int_parsing" in reason
    [line] = [e for e in logs if e["event"] == "message_parked"]
    assert secret not in reason and secret not in str(line) and "patient" not in str(line)
    assert message["Body"] == body, "the message itself is kept whole in the DLQ"


async def test_a_message_from_a_newer_worker_reaches_its_handler_with_the_fields_this_one_does_not_know(sqs, logs):
    url, dlq = await a_queue(sqs, max_receives=5)
    handled: list = []

    async def handle(message):
        handled.append(message)

    body = SubmitJob(run_id=new_id(), job_key="00000-0").model_dump_json()[:-1] + ', "priority": "high"}'
    await sqs.send_message(QueueUrl=url, MessageBody=body)
    await consume(sqs, url, dlq, handle, [], until=lambda: _true_after(handled))

    assert handled[0].model_extra == {"priority": "high"}
    assert '"priority":"high"' in handled[0].model_dump_json(), "re-sent, it carries the field on"
    assert await count(sqs, dlq) == 0


async def _never_called(message):
    raise AssertionError("an invalid message reached a handler")
