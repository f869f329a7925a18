"""Readers: every supported format parses, and every kind of bad input names file, place and fix."""
from __future__ import annotations

import gzip
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.dataplane.readers import InputError, detect_format, iter_batches


def read_all(data: bytes, name: str, **kw) -> pa.Table:
    fmt, gz = detect_format(name)
    batches = list(iter_batches(io.BytesIO(data), fmt=fmt, gzipped=gz, name=name, **kw))
    return pa.Table.from_batches(batches)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@pytest.mark.parametrize("name,expected", [
    ("a.csv", ("csv", False)), ("a.CSV.gz", ("csv", True)), ("a.tsv", ("tsv", False)),
    ("a.jsonl", ("jsonl", False)), ("a.ndjson.gz", ("jsonl", True)), ("a.parquet", ("parquet", False)),
])
def test_given_a_known_suffix_when_detecting_then_format_and_gzip_are_named(name, expected):
    assert detect_format(name) == expected


def test_given_an_unknown_suffix_when_detecting_then_the_error_lists_supported_types():
    with pytest.raises(InputError, match=r"data\.xlsx.*\.csv.*\.parquet"):
        detect_format("data.xlsx")


def test_given_quoted_commas_quotes_and_newlines_when_reading_csv_then_fields_are_intact():
    data = b'a,b\n"x, y","he said ""hi""\nand left"\n2,3\n'
    table = read_all(data, "in.csv")
    assert table.to_pylist() == [{"a": "x, y", "b": 'he said "hi"\nand left'}, {"a": "2", "b": "3"}]


def test_given_numbers_with_leading_zeros_when_reading_csv_then_text_is_kept_exactly():
    assert read_all(b"id\n007\n1.50\n", "in.csv").column("id").to_pylist() == ["007", "1.50"]


def test_given_a_utf8_bom_when_reading_csv_then_the_first_header_has_no_bom():
    table = read_all(b"\xef\xbb\xbfname,v\nx,1\n", "in.csv")
    assert table.schema.names == ["name", "v"]


def test_given_an_empty_file_when_reading_csv_then_it_says_the_file_is_empty():
    with pytest.raises(InputError, match=r"in\.csv: the file is empty"):
        read_all(b"", "in.csv")


def test_given_only_a_header_when_reading_csv_then_it_says_there_are_no_data_rows():
    with pytest.raises(InputError, match=r"in\.csv: .*header \(a, b\) but no data rows"):
        read_all(b"a,b\n", "in.csv")


def test_given_a_ragged_row_when_reading_csv_then_the_error_names_the_row_and_field_counts():
    with pytest.raises(InputError, match=r"in\.csv: a row after data row \d+ .*wrong number of fields.*Expected 2 columns, got 3: 4,5,6.*header has 2 fields"):
        read_all(b"a,b\n1,2\n4,5,6\n", "in.csv")


def test_given_non_utf8_bytes_when_reading_csv_then_the_error_names_the_field():
    with pytest.raises(InputError, match=r"in\.csv: field 'b' holds bytes that are not UTF-8.*save the file as UTF-8"):
        read_all(b"a,b\n1,caf\xe9\n", "in.csv")


def test_given_duplicate_column_names_when_reading_then_the_duplicates_are_named():
    with pytest.raises(InputError, match=r"duplicate column name\(s\) 'a'"):
        read_all(b"a,b,a\n1,2,3\n", "in.csv")


def test_given_an_empty_column_name_when_reading_then_its_position_is_named():
    with pytest.raises(InputError, match=r"column\(s\) 2 of the header have no name"):
        read_all(b"a,,c\n1,2,3\n", "in.csv")


def test_given_a_tsv_when_reading_then_tabs_split_and_quotes_are_literal():
    table = read_all(b'a\tb\n"x\ty\n', "in.tsv")
    assert table.to_pylist() == [{"a": '"x', "b": "y"}]


def test_given_jsonl_with_nested_values_when_reading_then_they_become_json_text():
    data = b'{"q": "hi", "n": 3, "m": {"k": [1]}}\n\n{"q": null, "n": 4, "m": null}\n'
    assert read_all(data, "in.jsonl").to_pylist() == [
        {"q": "hi", "n": "3", "m": '{"k":[1]}'}, {"q": None, "n": "4", "m": None}]


def test_given_a_malformed_jsonl_line_when_reading_then_the_line_number_is_named():
    with pytest.raises(InputError, match=r"in\.jsonl: line 2 is not valid JSON"):
        read_all(b'{"a": "1"}\n{"a": \n', "in.jsonl")


def test_given_a_jsonl_line_with_other_fields_when_reading_then_the_difference_is_named():
    with pytest.raises(InputError, match=r"line 2 has different fields.*missing a.*unexpected b"):
        read_all(b'{"a": "1"}\n{"b": "2"}\n', "in.jsonl")


def test_given_an_empty_jsonl_when_reading_then_it_says_the_file_is_empty():
    with pytest.raises(InputError, match=r"in\.jsonl: the file is empty"):
        read_all(b"\n\n", "in.jsonl")


def test_given_parquet_with_non_string_columns_when_reading_then_all_columns_are_strings():
    table = pa.table({"q": ["a", None], "n": pa.array([1, 2], pa.int64())})
    got = read_all(parquet_bytes(table), "in.parquet")
    assert got.schema == pa.schema([("q", pa.string()), ("n", pa.string())])
    assert got.to_pylist() == [{"q": "a", "n": "1"}, {"q": None, "n": "2"}]


def test_given_bytes_that_are_not_parquet_when_reading_then_it_says_so():
    with pytest.raises(InputError, match=r"in\.parquet: not a readable Parquet file"):
        read_all(b"a,b\n1,2\n", "in.parquet")


@pytest.mark.parametrize("name,plain", [
    ("in.csv.gz", b"a,b\n1,2\n"),
    ("in.tsv.gz", b"a\tb\n1\t2\n"),
    ("in.jsonl.gz", b'{"a": "1", "b": "2"}\n'),
    ("in.parquet.gz", None),
])
def test_given_a_gzipped_file_when_reading_then_it_matches_the_plain_rows(name, plain):
    if plain is None:
        plain = parquet_bytes(pa.table({"a": ["1"], "b": ["2"]}))
    assert read_all(gzip.compress(plain), name).to_pylist() == [{"a": "1", "b": "2"}]


def test_given_corrupt_gzip_when_reading_then_it_says_the_gzip_is_invalid():
    with pytest.raises(InputError, match="not valid gzip"):
        read_all(b"not gzip at all", "in.csv.gz")


def test_given_many_rows_when_reading_csv_then_batches_hold_every_row_in_order():
    data = b"n\n" + b"".join(b"%d\n" % i for i in range(50_000))
    table = read_all(data, "in.csv", batch_rows=1000)
    assert table.column("n").to_pylist() == [str(i) for i in range(50_000)]
