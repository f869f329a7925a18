"""End to end, as a hostile or careless user: bad input through all three entry points (an S3 drop, a
request event, `quarry submit`). Every case ends in a failed run whose error names the file and the
place (line or row, counted from 1), an email and an answer event; nothing hangs, nothing is read
from where it should not be, and no prompt text reaches the logs."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from services.cli.main import main as quarry
from tests.e2e.conftest import finished_run, latest_runs, load_run, mail_about, run_for, wait_until

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"


def drop(aws, key: str, body: bytes, sidecar: dict | None = None) -> str:
    if sidecar is not None:
        aws["s3"].put_object(Bucket="quarry-inputs", Key=key + ".spec.json", Body=json.dumps(sidecar).encode())
    aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body=body)
    return f"s3://quarry-inputs/{key}"


def unique(name: str) -> str:
    return f"{uuid.uuid4().hex[:6]}-{name}"


@pytest.fixture(scope="module")
def answers(stack, aws):
    """Quarry's answer events (Run Completed / Failed), gathered from a queue the bus feeds."""
    name = f"answers-{uuid.uuid4().hex[:6]}"
    queue = aws["sqs"].create_queue(QueueName=name)["QueueUrl"]
    arn = aws["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws["events"].put_rule(Name=name, EventBusName="quarry-bus", EventPattern=json.dumps(
        {"source": ["quarry"], "detail-type": ["Quarry Run Completed", "Quarry Run Failed"]}))
    aws["events"].put_targets(Rule=name, EventBusName="quarry-bus", Targets=[{"Id": "q", "Arn": arn}])
    seen: list[dict] = []

    def answer_for(run_id: str) -> dict:
        def look():
            for message in aws["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                                      WaitTimeSeconds=1).get("Messages", []):
                seen.append(json.loads(message["Body"]))
                aws["sqs"].delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            return next((event for event in seen if event["detail"]["run_id"] == run_id), None)
        return wait_until(look, timeout=30, what=f"an answer event for run {run_id}")

    return answer_for


def failed_with(stack, uri: str, *parts: str, timeout: float = 60):
    """The run of `uri` failed, its error and email hold every part, and the input is kept."""
    run = finished_run(uri, timeout=timeout)
    assert run.status == "FAILED", run.error
    assert run.error.startswith(uri), f"the error names the file first: {run.error}"
    for part in parts:
        assert part in run.error, f"{part!r} not in {run.error!r}"
    body = mail_about(stack, run.run_id)["body"]
    assert uri in body and parts[0] in body, "the email says what failed and where"
    return run


# --- S3 drop ------------------------------------------------------------------------------------

@pytest.mark.parametrize("template,expected", [
    ("{% for i in range(10**9) %}x{% endfor %}{{ question }}", "OverflowError: Range too big"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ question }}",
     "rendering one row took over 2 s and was stopped"),
])
def test_a_template_that_raises_or_runs_away_fails_the_run_naming_file_and_row(stack, aws, answers, template, expected):
    started = time.monotonic()
    uri = drop(aws, f"incoming/qa/{unique('loop.csv')}", b"question\nwhy?\nhow?\n", sidecar={"template": template})

    run = failed_with(stack, uri, "the prompt template failed on row 1", expected)

    assert time.monotonic() - started < 45, "a runaway template cannot hold preprocess for minutes"
    assert answers(run.run_id)["detail-type"] == "Quarry Run Failed"


def test_a_template_printing_a_jinja_global_over_a_column_of_another_case_fails_naming_both(stack, aws):
    uri = drop(aws, f"incoming/qa/{unique('range.csv')}", b"Range\n1-5\n", sidecar={"template": "{{ range }}"})

    failed_with(stack, uri, "outputs {{ range }}, which is not a column", "'Range'")


def ragged_csv() -> tuple[bytes, int]:
    lines = [b"question"] + [b'"two\nlines %d"' % i if i % 4 == 0 else b"plain %d" % i for i in range(1, 30)]
    lines[17] = b'one,two'
    data = b"\n".join(lines) + b"\n"
    return data, data[: data.index(b"one,two")].count(b"\n") + 1


def test_a_ragged_csv_row_is_reported_at_its_file_line(stack, aws):
    data, line = ragged_csv()
    uri = drop(aws, f"incoming/qa/{unique('ragged.csv')}", data)

    failed_with(stack, uri, f"line {line} (row 17) has 2 fields, but the header has 1")


@pytest.mark.parametrize("body,where", [
    (b"question\n" + b"".join(b"q %d\n" % i for i in range(1, 20)) + b"caf\xe9\n", "line 21 (row 20) is not UTF-8"),
    ("question\nwhy?\n".encode("utf-16-le"), "not UTF-8"),
    ("question\nwhy?\n".encode("utf-16"), "UTF-16"),
])
def test_text_that_is_not_utf8_is_named_as_such_with_its_line(stack, aws, body, where):
    uri = drop(aws, f"incoming/qa/{unique('enc.csv')}", body)

    failed_with(stack, uri, where, "save the file as UTF-8")


def test_a_5mb_field_is_over_the_size_limit_at_its_line(stack, aws):
    uri = drop(aws, f"incoming/qa/{unique('big.csv')}", b"question\nshort\n\"" + b"x" * 5_000_000 + b"\"\nend\n")

    failed_with(stack, uri, "line 3 (row 2) has a field over the size limit of 1,000,000 bytes")


def test_corrupt_gzip_is_named_with_its_file(stack, aws):
    uri = drop(aws, f"incoming/qa/{unique('bad.csv.gz')}", b"\x1f\x8b\x08\x00" + b"not deflate data at all" * 4)

    failed_with(stack, uri, "not valid gzip")


def test_a_model_bedrock_does_not_serve_is_refused_before_any_job(stack, aws):
    rows = b"question\n" + b"".join(b"q %d\n" % i for i in range(150))
    uri = drop(aws, f"incoming/qa/{unique('model.csv')}", rows,
               sidecar={"model_id": "anthropic.claude-9-opus-20990101-v1:0", "template": "{{ question }}"})

    run = failed_with(stack, uri, "'anthropic.claude-9-opus-20990101-v1:0' is not one Bedrock serves", HAIKU)

    _, jobs, _ = load_run(run.run_id)
    assert jobs == [], "no job was made, so none is retried"


# --- request events ------------------------------------------------------------------------------

def request(aws, detail) -> None:
    response = aws["events"].put_events(Entries=[{
        "Source": "acme.crm", "DetailType": "Quarry Batch Requested", "EventBusName": "quarry-bus",
        "Detail": detail if isinstance(detail, str) else json.dumps(detail)}])
    assert response["FailedEntryCount"] == 0


def run_of_request(request_id: str, *, reused: bool = False):
    key = f"event:{request_id}"
    return wait_until(lambda: next((r for r in latest_runs() if (r.source_key.startswith(key + "#reused")
                                                                 if reused else r.source_key == key)
                                    and r.terminal and r.notified_at), None),
                      what=f"the finished run of request {request_id}")


def test_a_request_for_another_runs_results_is_refused_unread(stack, aws, answers):
    aws["s3"].put_object(Bucket="quarry-results", Key="runs/someone-else/results.csv", Body=b"question\nsecret\n")
    request_id = unique("steal")

    request(aws, {"input_uri": "s3://quarry-results/runs/someone-else/results.csv", "profile": "qa",
                  "request_id": request_id})
    run = run_of_request(request_id)

    assert run.status == "FAILED" and "is outside the places this deployment reads inputs from" in run.error
    assert run.total_rows is None, "nothing was read"
    answer = answers(run.run_id)
    assert answer["detail-type"] == "Quarry Run Failed" and answer["detail"]["request_id"] == request_id
    assert "outside the places" in mail_about(stack, run.run_id)["body"]


def test_a_request_id_reused_for_another_input_is_answered_with_a_failed_run(stack, aws, answers):
    request_id = unique("crm")
    first = drop(aws, f"requests/{unique('a.csv')}", b"question\nwhy?\n")
    second = drop(aws, f"requests/{unique('b.csv')}", b"question\nhow?\n")
    request(aws, {"input_uri": first, "profile": "qa", "request_id": request_id})
    original = run_of_request(request_id)

    request(aws, {"input_uri": second, "profile": "qa", "request_id": request_id})
    reused = run_of_request(request_id, reused=True)

    assert original.status == "SUCCEEDED" and reused.status == "FAILED"
    assert f"request_id '{request_id}' was already used by run {original.run_id}" in reused.error
    assert answers(reused.run_id)["detail"]["request_id"] == request_id
    assert answers(original.run_id)["detail"]["request_id"] == request_id


def test_a_5000_character_request_id_is_answered_not_parked(stack, aws, answers):
    request_id = "r" * 5000
    uri = drop(aws, f"requests/{unique('long.csv')}", b"question\nwhy?\n")

    request(aws, {"input_uri": uri, "profile": "qa", "request_id": request_id})
    run = wait_until(lambda: next((r for r in latest_runs() if r.input_uri == uri and r.notified_at), None),
                     what="the answered run of the long request_id")

    assert run.status == "FAILED" and "request_id" in run.error and "128 characters" in run.error
    assert answers(run.run_id)["detail"]["request_id"] == request_id[:128]


def test_a_request_whose_detail_is_json_but_not_an_object_is_answered(stack, aws):
    # EventBridge wants an object; a sender's bus or a hand-sent message may still carry another detail.
    event_id = str(uuid.uuid4())
    queue = aws["sqs"].get_queue_url(QueueName="quarry-preprocess")["QueueUrl"]
    aws["sqs"].send_message(QueueUrl=queue, MessageBody=json.dumps({
        "version": "0", "id": event_id, "detail-type": "Quarry Batch Requested", "source": "acme.crm",
        "account": "123456789012", "time": "2026-01-01T00:00:00Z", "region": "us-east-1", "resources": [],
        "detail": ["input_uri", "s3://quarry-inputs/x.csv"]}))

    run = wait_until(lambda: next((r for r in latest_runs() if r.source_key == f"event:{event_id}" and r.notified_at),
                                  None), what="the answered run of the list detail")

    assert run.status == "FAILED" and "not an object" in run.error


# --- quarry submit ------------------------------------------------------------------------------

def test_submit_checks_the_template_before_uploading(stack, aws, tmp_path, capsys):
    source = tmp_path / f"{unique('syntax')}.csv"
    source.write_text("question\nwhy?\n")

    with pytest.raises(SystemExit) as exit_:
        quarry(["submit", str(source), "--profile", "qa", "--template", "{{ question "])

    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "syntax error on line 1" in err and "uploading" not in err
    assert not any(source.name in (obj["Key"]) for obj in
                   aws["s3"].list_objects_v2(Bucket="quarry-inputs", Prefix="uploads/").get("Contents", []))


def test_submit_follow_of_a_failing_file_exits_non_zero_and_results_says_why(stack, aws, tmp_path, capsys):
    source = tmp_path / "report[red].csv"
    data, line = ragged_csv()
    source.write_bytes(data)

    with pytest.raises(SystemExit) as exit_:
        quarry(["submit", str(source), "--profile", "qa", "--follow"])
    captured = capsys.readouterr()
    run_id = captured.out.strip().splitlines()[-1]

    assert exit_.value.code == 1
    [run] = [r for r in latest_runs() if r.run_id == run_id]
    assert run.input_uri.endswith("/report[red].csv"), "brackets in file names are kept"
    assert run.status == "FAILED" and f"report[red].csv: line {line}" in run.error
    with pytest.raises(SystemExit) as exit_:
        quarry(["results", run_id])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_.value.code == 1 and f"run {run_id} failed, with no result file" in err and f"line {line}" in err


def test_a_run_cancelled_before_its_input_was_staged_ends_cancelled(stack, aws):
    # About 0.07 s a row in the sandbox on idle cores, so 500 rows keep the run PREPARING for tens of
    # seconds, long enough to cancel (30 such rows were staged, answered and being written before the
    # cancel was read). Rows of 0.35 s took 1.4-2.5 s on loaded cores, over the 2 s row limit, which
    # fails the run if it comes before the cancel.
    slow = "{% for i in range(20) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ question }}"
    uri = drop(aws, f"incoming/qa/{unique('slow.csv')}", b"question\n" + b"".join(b"q %d\n" % i for i in range(500)),
               sidecar={"template": slow})
    preparing = wait_until(lambda: (r := run_for(uri)) is not None and r.status == "PREPARING" and r,
                           what="the run preparing")

    quarry(["cancel", preparing.run_id])
    run = finished_run(uri, timeout=60)

    assert run.status == "CANCELLED" and "before its input was read" in run.error
    queue = aws["sqs"].get_queue_url(QueueName="quarry-preprocess")["QueueUrl"]
    wait_until(lambda: all(aws["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=[name])["Attributes"][name]
                           == "0" for name in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")),
               timeout=60, what="preprocess to finish staging, after which it must leave the cancelled run alone")
    run_again, jobs, holders = load_run(run.run_id)
    assert run_again.status == "CANCELLED" and jobs == [] and holders == set()


# --- what the stack exposes ----------------------------------------------------------------------

def test_no_prompt_text_reaches_the_logs(stack, aws):
    marker = f"SECRET-{uuid.uuid4().hex}"
    good = drop(aws, f"incoming/summarize/{unique('secret.jsonl')}",
                b"".join(json.dumps({"prompt": f"{marker} row {i}"}).encode() + b"\n" for i in range(5)))
    bad = drop(aws, f"incoming/qa/{unique('secret.csv')}", f"question\n{marker},extra\n".encode())
    assert finished_run(good).status == "SUCCEEDED" and finished_run(bad).status == "FAILED"

    logs = {path.name: path.read_text(errors="replace") for path in Path(stack.logs).glob("*.log")}

    assert logs and [name for name, text in logs.items() if marker in text] == []


def test_every_local_service_listens_on_loopback_only(stack):
    tables = [Path(p) for p in ("/proc/net/tcp", "/proc/net/tcp6") if Path(p).exists()]
    if not tables:
        pytest.skip("no /proc/net/tcp here to read listening sockets from")
    c = stack.config
    ports = {c.moto_port, c.bedrock_port, c.mail_http_port, c.smtp_port}
    listening = {}
    for table in tables:
        for row in table.read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, port = local.rsplit(":", 1)
            if state == "0A" and int(port, 16) in ports:  # 0A: LISTEN
                listening.setdefault(int(port, 16), set()).add(address)

    assert set(listening) == ports
    loopback = {"0100007F", "00000000000000000000000001000000"}
    assert all(addresses <= loopback for addresses in listening.values()), listening
