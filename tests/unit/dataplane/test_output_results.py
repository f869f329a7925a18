"""Batch output read with Arrow: the same results as the line-by-line parser, placed on rows and merged."""
from __future__ import annotations

import orjson
import pytest

from shared.dataplane.assemble import (
    NO_OUTPUT, RecordResult, merge_results, parse_output_lines, read_output_blocks, source_results_of,
)
from shared.dataplane.prepare import record_id

FIRST, ROWS = 100, 8


def line(row: int, **fields) -> bytes:
    return orjson.dumps({"recordId": record_id(row), "modelInput": {"echo": ["of", {"the": "input"}]}, **fields})


def blocks(lines: list[bytes], size: int = 7) -> list[bytes]:
    """The file's bytes cut into small blocks, so lines straddle them."""
    data = b"\n".join(lines) + b"\n"
    return [data[i:i + size] for i in range(0, len(data), size)]


def by_row(results) -> dict[int, tuple]:
    """row -> (output, error, input tokens, output tokens)."""
    out, err = results.output.to_pylist(), results.error.to_pylist()
    return {int(r): (out[i], err[i], int(results.input_tokens[i]), int(results.output_tokens[i]))
            for i, r in enumerate(results.rows)}


def line_by_line(lines: list[bytes], family: str, converse: bool = False) -> dict[int, tuple]:
    parsed = parse_output_lines(lines, family, converse)
    return by_row(source_results_of(parsed, first_row=FIRST, rows=ROWS))


def with_arrow(lines: list[bytes], family: str, converse: bool = False, size: int = 7) -> dict[int, tuple]:
    found = read_output_blocks(blocks(lines, size), family, converse, first_row=FIRST, rows=ROWS)
    assert found is not None
    return by_row(found)


ERROR_LINES = [
    line(100, error={"errorCode": 400, "errorMessage": "Malformed input request"}),
    line(101, error={"errorCode": 429}),
    line(102, error={"errorMessage": "only a message"}),
    line(103, error={"errorCode": 500, "errorMessage": ""}),
    line(104, error={}),
    line(105),  # neither error nor modelOutput
]

FAMILY_LINES = {
    ("anthropic", False): [
        line(100, modelOutput={"content": [{"type": "text", "text": "hi"}], "usage": {"input_tokens": 3, "output_tokens": 1}}),
        line(101, modelOutput={"content": [{"type": "text", "text": "a"}, {"type": "tool_use"}, None, {"text": "b"}],
                               "usage": {"input_tokens": 4}}),
        line(102, modelOutput={"content": [], "usage": {"input_tokens": 5, "output_tokens": 0}}),
        line(103, modelOutput={"content": [{"text": ""}], "usage": None}),
        line(104, modelOutput={"stop_reason": "max_tokens"}),
    ],
    ("nova", False): [
        line(100, modelOutput={"output": {"message": {"content": [{"text": "nova says"}]}},
                               "usage": {"inputTokens": 7, "outputTokens": 2}}),
        line(101, modelOutput={"output": {"message": {"content": []}}, "usage": {"inputTokens": 1}}),
        line(102, modelOutput={"usage": {"inputTokens": 1, "outputTokens": 1}}),
    ],
    ("anthropic", True): [  # Converse: one shape for every family
        line(100, modelOutput={"output": {"message": {"role": "assistant", "content": [{"text": "x"}, {"text": "y"}]}},
                               "usage": {"inputTokens": 9, "outputTokens": 4, "totalTokens": 13}}),
        line(101, modelOutput={"output": {"message": {"content": None}}}),
    ],
    ("titan-text", False): [
        line(100, modelOutput={"inputTextTokenCount": 5, "results": [{"outputText": "titan", "tokenCount": 2}]}),
        line(101, modelOutput={"inputTextTokenCount": 5, "results": []}),
        line(102, modelOutput={"results": [{"tokenCount": 3}]}),
    ],
    ("llama", False): [
        line(100, modelOutput={"generation": "llama", "prompt_token_count": 8, "generation_token_count": 3}),
        line(101, modelOutput={"prompt_token_count": 8}),
    ],
    ("mistral", False): [
        line(100, modelOutput={"outputs": [{"text": "mistral", "stop_reason": "stop"}, {"text": "ignored"}]}),
        line(101, modelOutput={"outputs": []}),
    ],
    ("cohere", False): [
        line(100, modelOutput={"generations": [{"text": "cohere"}]}),
        line(101, modelOutput={"generations": None}),
    ],
}


@pytest.mark.parametrize("family,converse", list(FAMILY_LINES))
def test_given_each_familys_outputs_when_read_with_arrow_then_results_equal_the_line_parser(family, converse):
    lines = FAMILY_LINES[(family, converse)]
    assert with_arrow(lines, family, converse) == line_by_line(lines, family, converse)


def test_given_an_anthropic_output_when_read_with_arrow_then_text_and_tokens_are_kept():
    assert with_arrow(FAMILY_LINES[("anthropic", False)], "anthropic")[0] == ("hi", None, 3, 1)


def test_given_a_converse_output_when_read_with_arrow_then_its_text_blocks_are_joined():
    assert with_arrow(FAMILY_LINES[("anthropic", True)], "anthropic", True)[0] == ("xy", None, 9, 4)


def test_given_error_lines_when_read_with_arrow_then_messages_equal_the_line_parser():
    assert with_arrow(ERROR_LINES, "anthropic") == line_by_line(ERROR_LINES, "anthropic")


def test_given_an_error_line_when_read_with_arrow_then_it_reads_code_colon_message():
    assert with_arrow(ERROR_LINES, "anthropic")[0] == (None, "400: Malformed input request", 0, 0)


def test_given_titan_embeddings_when_read_with_arrow_then_the_line_parser_is_asked_for():
    lines = [line(100, modelOutput={"embedding": [0.5, 3], "inputTextTokenCount": 2})]
    assert read_output_blocks(blocks(lines), "titan-embed", False, first_row=FIRST, rows=ROWS) is None


def test_given_titan_embeddings_when_placed_from_the_line_parser_then_they_are_json_lists():
    lines = [line(100, modelOutput={"embedding": [0.5, 3], "inputTextTokenCount": 2})]
    assert line_by_line(lines, "titan-embed")[0] == ("[0.5,3]", None, 2, 0)


def test_given_a_torn_line_when_read_with_arrow_then_the_line_parser_is_asked_for():
    lines = [line(100, modelOutput={"content": [{"text": "ok"}]}), line(101)[:40]]
    assert read_output_blocks(blocks(lines), "anthropic", False, first_row=FIRST, rows=ROWS) is None


def test_given_an_unexpected_type_when_read_with_arrow_then_the_line_parser_is_asked_for():
    lines = [line(100, modelOutput={"content": "a bare string"})]
    assert read_output_blocks(blocks(lines), "anthropic", False, first_row=FIRST, rows=ROWS) is None


@pytest.mark.parametrize("output", [{"message": None}, {}])
def test_given_a_converse_output_without_a_message_when_read_with_arrow_then_the_line_parser_is_asked_for(output):
    # Arrow reads a missing message and a null one alike; bodies.extract_output does not.
    lines = [line(100, modelOutput={"output": output})]
    assert read_output_blocks(blocks(lines), "nova", False, first_row=FIRST, rows=ROWS) is None


def test_given_a_null_first_result_when_read_with_arrow_then_the_line_parser_is_asked_for():
    lines = [line(100, modelOutput={"results": [None]})]
    assert read_output_blocks(blocks(lines), "titan-text", False, first_row=FIRST, rows=ROWS) is None


def test_given_a_record_twice_in_one_file_when_read_with_arrow_then_the_last_line_wins():
    lines = [line(101, modelOutput={"content": [{"text": "first"}]}), line(101, error={"errorCode": 500, "errorMessage": "later"})]
    assert with_arrow(lines, "anthropic") == {1: (None, "500: later", 0, 0)}


def test_given_records_of_other_chunks_and_odd_ids_when_read_with_arrow_then_they_are_ignored():
    ok = {"modelOutput": {"content": [{"text": "t"}]}}
    lines = [line(99, **ok), line(108, **ok), orjson.dumps({"recordId": "101", **ok}), orjson.dumps({"recordId": None, **ok}),
             orjson.dumps({"modelInput": {}, **ok}), line(102, **ok)]
    assert with_arrow(lines, "anthropic") == line_by_line(lines, "anthropic") == {2: ("t", None, 0, 0)}


def test_given_any_block_size_when_read_with_arrow_then_results_are_the_same():
    lines = FAMILY_LINES[("anthropic", False)] + [b"", b"  "]
    assert with_arrow(lines, "anthropic", size=1) == with_arrow(lines, "anthropic", size=1 << 20)


def test_given_no_output_file_when_read_with_arrow_then_there_are_no_results():
    assert with_arrow([], "anthropic") == {}


def source(results: dict[int, RecordResult]):
    return source_results_of({record_id(FIRST + i): r for i, r in results.items()}, first_row=FIRST, rows=ROWS)


def test_given_no_result_for_a_row_when_merged_then_the_row_reports_no_output():
    merged = merge_results(ROWS, [source({0: RecordResult(text="a")})])
    assert merged.error.to_pylist() == [None] + [NO_OUTPUT] * (ROWS - 1)


def test_given_an_error_then_a_retry_success_when_merged_then_the_retry_replaces_the_error():
    merged = merge_results(ROWS, [source({0: RecordResult(error="boom")}), source({0: RecordResult(text="ok", input_tokens=2)})])
    assert (merged.output[0].as_py(), merged.error[0].as_py(), merged.input_tokens[0]) == ("ok", None, 2)


def test_given_a_success_then_a_retry_error_when_merged_then_the_success_is_kept():
    merged = merge_results(ROWS, [source({0: RecordResult(text="ok")}), source({0: RecordResult(error="late")})])
    assert (merged.output[0].as_py(), merged.error[0].as_py()) == ("ok", None)


def test_given_two_errors_when_merged_then_the_later_error_is_reported():
    merged = merge_results(ROWS, [source({0: RecordResult(error="first")}), source({0: RecordResult(error="second")})])
    assert merged.error[0].as_py() == "second"


def test_given_a_row_missing_from_the_job_when_merged_with_on_demand_results_then_it_is_filled():
    merged = merge_results(ROWS, [source({}), source({}), source({3: RecordResult(text="on demand", output_tokens=5)})])
    assert (merged.output[3].as_py(), merged.output_tokens[3], merged.error.null_count) == ("on demand", 5, 1)


def test_given_no_sources_when_merged_then_every_row_reports_no_output():
    merged = merge_results(ROWS, [])
    assert merged.error.to_pylist() == [NO_OUTPUT] * ROWS and merged.output.null_count == ROWS


def test_given_one_file_with_results_and_empty_ones_when_merged_then_its_results_are_not_concatenated(monkeypatch):
    # A chunk's cached and on-demand files are mostly empty: concatenating them with the job's
    # results copied every output text of the chunk once more, at the chunk's peak.
    sources = [source({}), source({1: RecordResult(text="b"), 0: RecordResult(text="a")}), source({})]
    monkeypatch.setattr("shared.dataplane.assemble.pa.concat_arrays", lambda arrays: pytest.fail("concatenated"))
    merged = merge_results(ROWS, sources)
    assert merged.output.to_pylist()[:3] == ["a", "b", None] and merged.error.to_pylist()[2] == NO_OUTPUT
