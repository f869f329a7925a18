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
    with pytest.raises(InputError, match=r"in\.csv: line 3 \(row 2\) has 3 fields, but the header has 2 \(a, b\)"):
        read_all(b"a,b\n1,2\n4,5,6\n", "in.csv")


def test_given_non_utf8_bytes_when_reading_csv_then_the_error_names_line_and_row():
    with pytest.raises(InputError, match=r"in\.csv: line 2 \(row 1\) is not UTF-8; save the file as UTF-8"):
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
    with pytest.raises(InputError, match=r"in\.jsonl: line 2 \(row 2\) is not valid JSON"):
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


# --- errors point to the real place: lines and rows counted from 1, the header is line 1 -----------

class Trickle(io.RawIOBase):
    """A stream that hands out at most `size` bytes a read, as a slow network does."""

    def __init__(self, data: bytes, size: int) -> None:
        self._data, self._size = io.BytesIO(data), size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        piece = self._data.read(min(self._size, len(b)))
        b[: len(piece)] = piece
        return len(piece)


def csv_with_multiline_fields(rows: int, bad_row: int | None = None, bad: bytes = b"") -> bytes:
    """id,text with every third row's text over two lines; row `bad_row` replaced by `bad`."""
    lines = [b"id,text"]
    for i in range(1, rows + 1):
        lines.append(bad if i == bad_row else (b'%d,"two\nlines %d"' % (i, i) if i % 3 == 0 else b"%d,one %d" % (i, i)))
    return b"\n".join(lines) + b"\n"


def line_of(data: bytes, needle: bytes) -> int:
    return data[: data.index(needle)].count(b"\n") + 1


@pytest.mark.parametrize("read_size", [None, 5])
def test_given_a_ragged_row_after_quoted_newlines_when_reading_then_the_file_line_is_named(read_size):
    data = csv_with_multiline_fields(30, bad_row=16, bad=b"16,x,y")
    stream = Trickle(data, read_size) if read_size else io.BytesIO(data)

    with pytest.raises(InputError) as caught:
        list(iter_batches(stream, fmt="csv", gzipped=False, name="in.csv"))

    assert line_of(data, b"16,x,y") == 22
    assert str(caught.value).startswith("in.csv: line 22 (row 16) has 3 fields, but the header has 2")


@pytest.mark.parametrize("read_size", [None, 3])
def test_given_a_latin1_byte_in_row_20_when_reading_then_row_and_line_are_named_as_not_utf8(read_size):
    data = csv_with_multiline_fields(30, bad_row=20, bad=b"20,caf\xe9")
    stream = Trickle(data, read_size) if read_size else io.BytesIO(data)

    assert line_of(data, b"20,caf") == 27
    with pytest.raises(InputError, match=r"^in\.csv: line 27 \(row 20\) is not UTF-8"):
        list(iter_batches(stream, fmt="csv", gzipped=False, name="in.csv"))


def test_given_a_5mb_field_when_reading_csv_then_it_is_over_the_size_limit_at_its_line():
    data = b"a,b\n1,2\n" + b'3,"' + b"x" * 5_000_000 + b'"\n4,5\n'

    with pytest.raises(InputError, match=r"in\.csv: line 3 \(row 2\) has a field over the size limit of 1,000,000 bytes"):
        read_all(data, "in.csv")


def test_given_a_long_field_in_jsonl_when_reading_then_it_is_over_the_size_limit_at_its_line():
    data = b'{"a": "1"}\n\n{"a": "' + b"x" * 2_000 + b'"}\n'

    with pytest.raises(InputError, match=r"in\.jsonl: line 3 \(row 2\) has a field over the size limit of 1,000 bytes"):
        read_all(data, "in.jsonl", max_row_bytes=1_000)


@pytest.mark.parametrize("name", ["in.csv", "in.tsv", "in.jsonl"])
def test_given_utf16_without_a_bom_when_reading_then_it_is_not_utf8(name):
    text = '{"a": "1"}\n' if name.endswith("jsonl") else "a,b\n1,2\n".replace(",", "\t" if name.endswith("tsv") else ",")
    with pytest.raises(InputError, match=rf"{name}: line 1: .*not UTF-8.*UTF-16"):
        read_all(text.encode("utf-16-le"), name)


def test_given_utf16_with_a_bom_when_reading_then_it_says_utf16():
    with pytest.raises(InputError, match=r"in\.csv: line 1: the file is UTF-16 .*not UTF-8"):
        read_all("a,b\n1,2\n".encode("utf-16"), "in.csv")


def test_given_a_latin1_byte_in_jsonl_when_reading_then_line_and_row_are_named():
    with pytest.raises(InputError, match=r"in\.jsonl: line 3 \(row 2\) is not UTF-8"):
        read_all(b'{"a": "1"}\n\n{"a": "caf\xe9"}\n', "in.jsonl")


def test_given_crlf_and_blank_lines_when_a_row_is_ragged_then_its_line_counts_the_blank_ones():
    with pytest.raises(InputError, match=r"in\.csv: line 4 \(row 2\) has 3 fields"):
        read_all(b"a,b\r\n1,2\r\n\r\n3,4,5\r\n", "in.csv")


def test_given_old_mac_line_endings_when_reading_csv_then_rows_split_at_each_cr():
    assert read_all(b"a,b\r1,2\r\r3,4\r", "in.csv").to_pylist() == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_given_corrupt_gzip_when_reading_then_the_error_names_the_file():
    with pytest.raises(InputError, match=r"^in\.csv\.gz: the file is not valid gzip"):
        read_all(b"not gzip at all", "in.csv.gz")
