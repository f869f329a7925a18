"""Preprocess then postprocess: records are valid JSONL, and every input row comes back once."""
from __future__ import annotations

import csv
import io

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.dataplane.assemble import NO_OUTPUT, RecordResult, assemble, parse_output_lines
from shared.dataplane.prepare import PrepareLimits, PrepareSpec, prepare, record_id
from shared.dataplane.readers import InputError
from shared.domain.bodies import build_body

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
LIMITS = PrepareLimits(min_records=2, max_records=4, batch_rows=3)


def csv_bytes(rows: list[dict]) -> bytes:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return out.getvalue().encode()


ROWS = [{"q": f"question {i}, with \"quotes\"\nand\ttabs \\ \x01", "id": str(i)} for i in range(10)]


def do_prepare(tmp_path, data=None, name="in.csv", limits=LIMITS, **spec):
    spec = {"model_id": CLAUDE, "template": "Q: {{ q }}", **spec}
    return prepare(io.BytesIO(csv_bytes(ROWS) if data is None else data), name=name,
                   spec=PrepareSpec(**spec), limits=limits, workdir=tmp_path)


def spool_lines(prepared) -> list[dict]:
    return [orjson.loads(line) for line in prepared.spool_path.read_bytes().splitlines()]


def fake_bedrock(prepared, chunk, *, skip=(), fail=()) -> list[bytes]:
    """The .jsonl.out lines a batch job would write for a chunk, in reverse (order is not promised)."""
    lines = []
    for rec in map(orjson.loads, prepared.read_chunk(chunk).splitlines()):
        rid = rec["recordId"]
        if rid in skip:
            continue
        if rid in fail:
            rec["error"] = {"errorCode": 400, "errorMessage": "Malformed input request"}
        else:
            text = rec["modelInput"]["messages"][0]["content"]
            rec["modelOutput"] = {"content": [{"type": "text", "text": "A:" + text}],
                                  "usage": {"input_tokens": 5, "output_tokens": 2}}
        lines.append(orjson.dumps(rec))
    return lines[::-1]


def test_given_rows_when_prepared_then_each_record_is_the_native_body_of_its_rendered_prompt(tmp_path):
    prepared = do_prepare(tmp_path)
    assert spool_lines(prepared) == [
        {"recordId": record_id(i), "modelInput": build_body("anthropic", "Q: " + r["q"])} for i, r in enumerate(ROWS)]


def test_given_a_vectorized_template_when_prepared_then_bytes_equal_orjson_serialization(tmp_path):
    prepared = do_prepare(tmp_path)
    assert prepared.vectorized
    expected = b"".join(orjson.dumps({"recordId": record_id(i), "modelInput": build_body("anthropic", "Q: " + r["q"])})
                        + b"\n" for i, r in enumerate(ROWS))
    assert prepared.spool_path.read_bytes() == expected


def test_given_a_complex_template_when_prepared_then_the_row_path_gives_the_same_records(tmp_path):
    plain = spool_lines(do_prepare(tmp_path / "a", template="Q: {{ q }}"))
    fancy = do_prepare(tmp_path / "b", template="Q: {{ q | string }}")
    assert not fancy.vectorized and spool_lines(fancy) == plain


def test_given_10_rows_and_4_per_job_when_prepared_then_chunks_are_balanced_byte_ranges(tmp_path):
    prepared = do_prepare(tmp_path)
    assert [c.records for c in prepared.plan.chunks] == [3, 3, 4] or [c.records for c in prepared.plan.chunks] == [3, 4, 3]
    joined = b"".join(prepared.read_chunk(c) for c in prepared.plan.chunks)
    assert joined == prepared.spool_path.read_bytes()


def test_given_rows_when_prepared_then_rows_parquet_holds_the_input_as_strings(tmp_path):
    prepared = do_prepare(tmp_path)
    assert pq.read_table(prepared.rows_path).to_pylist() == ROWS


def test_given_a_model_input_column_when_no_template_then_bodies_pass_through(tmp_path):
    data = b'{"modelInput": {"inputText": "hi", "x": [1]}}\n{"modelInput": {"inputText": "yo"}}\n'
    prepared = do_prepare(tmp_path, data=data, name="in.jsonl", template=None)
    assert [r["modelInput"] for r in spool_lines(prepared)] == [{"inputText": "hi", "x": [1]}, {"inputText": "yo"}]


def test_given_no_template_and_no_model_input_column_when_prepared_then_it_says_what_to_add(tmp_path):
    with pytest.raises(InputError, match=r"needs a 'modelInput' column.*columns are: q, id"):
        do_prepare(tmp_path, template=None)


def test_given_a_model_input_that_is_not_an_object_when_prepared_then_the_row_is_named(tmp_path):
    data = b'{"modelInput": {"a": 1}}\n{"modelInput": [1, 2]}\n'
    with pytest.raises(InputError, match=r"in\.jsonl: row 2, field 'modelInput' holds a JSON list"):
        do_prepare(tmp_path, data=data, name="in.jsonl", template=None)


def test_given_a_row_over_the_record_limit_when_prepared_then_its_line_and_row_are_named(tmp_path):
    rows = [{"q": "short"}] * 5 + [{"q": "x" * 5_000}]
    with pytest.raises(InputError, match=r"in\.csv: line 7 \(row 6\) has a field over the size limit of 1,000 bytes"):
        do_prepare(tmp_path, data=csv_bytes(rows), limits=PrepareLimits(max_record_bytes=1_000))


def test_given_a_row_whose_record_is_over_the_limit_when_prepared_then_the_row_is_named(tmp_path):
    rows = [{"q": "short"}] * 5 + [{"q": "x" * 900}]
    with pytest.raises(InputError, match=r"in\.csv: row 6 makes a record of [\d,]+ bytes, over the size limit of "
                                         r"1,000 bytes per record"):
        do_prepare(tmp_path, data=csv_bytes(rows), template="{{ q }} and again {{ q }}",
                   limits=PrepareLimits(max_record_bytes=1_000))


def test_given_an_unknown_model_when_prepared_then_it_fails_before_reading(tmp_path):
    with pytest.raises(InputError, match="supported families"):
        do_prepare(tmp_path, model_id="acme.gpt-9")


def test_given_a_template_with_a_missing_column_when_prepared_then_it_fails_fast(tmp_path):
    with pytest.raises(InputError, match=r"uses answer.*columns are: q, id"):
        do_prepare(tmp_path, template="{{ answer }}")


def test_given_batch_output_lines_when_parsed_then_successes_and_errors_are_read():
    lines = [b'{"recordId": "0000000000", "modelInput": {}, "modelOutput": {"content": [{"text": "hi"}],'
             b' "usage": {"input_tokens": 3, "output_tokens": 1}}}',
             b'{"recordId": "0000000001", "modelInput": {}, "error": {"errorCode": 400, "errorMessage": "bad"}}', b""]
    assert parse_output_lines(lines, "anthropic", False) == {
        "0000000000": RecordResult(text="hi", input_tokens=3, output_tokens=1),
        "0000000001": RecordResult(error="400: bad")}


@pytest.mark.parametrize("out_format", ["csv", "jsonl", "parquet"])
def test_given_missing_and_failed_results_when_assembled_then_every_row_appears_once_in_order(tmp_path, out_format):
    prepared = do_prepare(tmp_path)
    skip, fail = {record_id(2)}, {record_id(7)}
    out = io.BytesIO()
    summary = assemble(prepared.rows_path, prepared.plan, lambda c: fake_bedrock(prepared, c, skip=skip, fail=fail),
                       out_format=out_format, out_stream=out, family="anthropic")
    rows = read_output(out.getvalue(), out_format)
    assert [r["id"] for r in rows] == [str(i) for i in range(10)]
    assert [r["record_id"] for r in rows] == [record_id(i) for i in range(10)]
    assert rows[0]["output"] == "A:Q: " + ROWS[0]["q"] and rows[0]["error"] in (None, "")
    assert rows[2]["error"] == NO_OUTPUT and rows[7]["error"] == "400: Malformed input request"
    assert (summary.rows, summary.succeeded, summary.failed) == (10, 8, 2)
    assert (summary.input_tokens, summary.output_tokens) == (40, 16)
    assert summary.errors == {NO_OUTPUT: 1, "400: Malformed input request": 1}


def read_output(data: bytes, fmt: str) -> list[dict]:
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    if fmt == "jsonl":
        return [orjson.loads(line) for line in data.splitlines()]
    return pq.read_table(pa.BufferReader(data)).to_pylist()


def test_given_result_mappings_when_assembled_then_embeddings_are_json_lists(tmp_path):
    prepared = do_prepare(tmp_path, model_id="amazon.titan-embed-text-v2:0")
    results = {record_id(i): RecordResult(embedding=[0.5, float(i)], input_tokens=1) for i in range(10)}
    out = io.BytesIO()
    assemble(prepared.rows_path, prepared.plan, lambda c: results, out_format="jsonl", out_stream=out,
             family="titan-embed")
    assert orjson.loads(out.getvalue().splitlines()[3])["output"] == "[0.5,3.0]"


def test_given_an_on_demand_plan_when_assembled_then_all_rows_come_back(tmp_path):
    prepared = do_prepare(tmp_path, limits=PrepareLimits(min_records=100))
    assert prepared.plan.on_demand
    out = io.BytesIO()
    summary = assemble(prepared.rows_path, prepared.plan, lambda c: {}, out_format="jsonl", out_stream=out,
                       family="anthropic")
    assert summary.rows == 10 and summary.failed == 10


def test_given_an_input_column_named_output_when_assembled_then_ours_is_prefixed(tmp_path):
    data = csv_bytes([{"q": "a", "output": "mine"}] * 3)
    prepared = do_prepare(tmp_path, data=data)
    out = io.BytesIO()
    assemble(prepared.rows_path, prepared.plan, lambda c: {}, out_format="jsonl", out_stream=out, family="anthropic")
    row = orjson.loads(out.getvalue().splitlines()[0])
    assert row["output"] == "mine" and "bedrock_output" in row
