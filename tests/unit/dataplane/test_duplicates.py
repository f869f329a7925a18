"""Repeated requests taken out of the spool (split_duplicates): which rows, which first rows, and
what is left to send; a hash collision never makes two different requests one."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shared.dataplane.duplicates as duplicates
from shared.dataplane.duplicates import duplicates_bytes, read_duplicates, split_duplicates


def record(row: int, body: str) -> bytes:
    return b'{"recordId":"%010d","modelInput":{"prompt":"%s"}}\n' % (row, body.encode())


def write_spool(path: Path, bodies: list[str]) -> list[bytes]:
    lines = [record(row, body) for row, body in enumerate(bodies)]
    path.write_bytes(b"".join(lines))
    return lines


def test_a_spool_without_repeated_requests_has_no_duplicates(tmp_path):
    write_spool(tmp_path / "records.jsonl", ["a", "b", "c"])

    assert split_duplicates(tmp_path / "records.jsonl", workdir=tmp_path) is None


def test_each_repeat_is_left_out_and_points_at_the_first_row_with_its_request(tmp_path):
    lines = write_spool(tmp_path / "records.jsonl", ["a", "bb", "a", "ccc", "bb", "a"])

    dups = split_duplicates(tmp_path / "records.jsonl", workdir=tmp_path)

    assert dups.count == 3
    assert dups.dup_rows.tolist() == [2, 4, 5] and dups.dup_of.tolist() == [0, 1, 0]
    assert dups.rows.tolist() == [0, 1, 3]
    assert dups.sizes.tolist() == [len(lines[0]), len(lines[1]), len(lines[3])]
    assert dups.spool.read_bytes() == lines[0] + lines[1] + lines[3]


def test_rows_whose_hashes_collide_are_told_apart_by_their_bytes(tmp_path, monkeypatch):
    # Given a hash under which every request of the same length collides
    monkeypatch.setattr(duplicates, "hash", len, raising=False)
    lines = write_spool(tmp_path / "records.jsonl", ["aa", "bb", "bb", "aa", "cc"])

    dups = split_duplicates(tmp_path / "records.jsonl", workdir=tmp_path)

    # then only byte-identical requests are duplicates, each of the row that first had it
    assert dups.dup_rows.tolist() == [2, 3] and dups.dup_of.tolist() == [1, 0]
    assert dups.rows.tolist() == [0, 1, 4]
    assert dups.spool.read_bytes() == lines[0] + lines[1] + lines[4]


def test_a_hash_collision_alone_makes_no_duplicates(tmp_path, monkeypatch):
    monkeypatch.setattr(duplicates, "hash", len, raising=False)
    write_spool(tmp_path / "records.jsonl", ["aa", "bb", "cc"])

    assert split_duplicates(tmp_path / "records.jsonl", workdir=tmp_path) is None


def test_a_spool_out_of_row_order_is_refused_rather_than_misread(tmp_path):
    (tmp_path / "records.jsonl").write_bytes(record(1, "a") + record(0, "a"))

    with pytest.raises(ValueError, match="is not row"):
        split_duplicates(tmp_path / "records.jsonl", workdir=tmp_path)


def test_the_duplicate_map_reads_back_as_written(tmp_path):
    write_spool(tmp_path / "records.jsonl", ["a", "b", "a", "b", "b"])
    dups = split_duplicates(tmp_path / "records.jsonl", workdir=tmp_path)

    rows, of = read_duplicates(duplicates_bytes(dups).splitlines())

    assert rows.tolist() == [2, 3, 4] and of.tolist() == [0, 1, 1]


@settings(max_examples=60, deadline=None)
@given(bodies=st.lists(st.text("ab", max_size=3), max_size=60),
       weak_hash=st.booleans(), block=st.sampled_from([2, 3, 7, 1 << 16]))
def test_the_duplicates_are_exactly_the_rows_whose_request_an_earlier_row_has(tmp_path_factory, bodies, weak_hash,
                                                                                block):
    workdir = tmp_path_factory.mktemp("dups")
    lines = write_spool(workdir / "records.jsonl", bodies)
    first_with: dict[str, int] = {}
    expected = {row: first_with.setdefault(body, row) for row, body in enumerate(bodies)}
    expected = {row: first for row, first in expected.items() if first != row}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(duplicates, "_BLOCK", block)  # small blocks: repeats across block edges
        if weak_hash:  # most pairs of requests collide
            patch.setattr(duplicates, "hash", lambda body: len(body) % 2, raising=False)
        dups = split_duplicates(workdir / "records.jsonl", workdir=workdir)

    if not expected:
        assert dups is None
        return
    assert dict(zip(dups.dup_rows.tolist(), dups.dup_of.tolist())) == expected
    assert dups.dup_rows.tolist() == sorted(expected)
    kept = [row for row in range(len(bodies)) if row not in expected]
    assert dups.rows.tolist() == kept
    assert dups.sizes.tolist() == [len(lines[row]) for row in kept]
    assert dups.spool.read_bytes() == b"".join(lines[row] for row in kept)
    assert dups.rows.dtype == dups.sizes.dtype == np.int64
