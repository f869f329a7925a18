"""A result written straight to S3: the object appears whole, or not at all."""
from __future__ import annotations

import pytest

from shared.adapters.objects import SyncObjects

BUCKET = "results"
URI = f"s3://{BUCKET}/runs/r1/results.csv"
PART = 8 * 1024 * 1024  # boto3's multipart threshold and part size


@pytest.fixture
def s3(s3_client):
    s3_client.create_bucket(Bucket=BUCKET)
    return s3_client


def stored(s3) -> bytes | None:
    try:
        return s3.get_object(Bucket=BUCKET, Key="runs/r1/results.csv")["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def write_in_pieces(out, data: bytes, piece: int = 100_000) -> None:
    for i in range(0, len(data), piece):
        out.write(memoryview(data)[i:i + piece])


def test_given_a_small_stream_when_the_block_ends_then_the_object_holds_its_bytes(s3):
    with SyncObjects(s3).writing(URI) as out:
        write_in_pieces(out, b"a,b\n1,2\n")
    assert stored(s3) == b"a,b\n1,2\n"


def test_given_a_stream_of_several_parts_when_the_block_ends_then_the_object_holds_its_bytes(s3):
    data = bytes(range(256)) * (2 * PART // 256 + 1000)
    with SyncObjects(s3).writing(URI) as out:
        write_in_pieces(out, data)
    assert stored(s3) == data


def test_given_an_error_after_several_parts_when_writing_then_the_upload_is_aborted_and_no_object_is_left(s3):
    with pytest.raises(ValueError, match="join failed"):
        with SyncObjects(s3).writing(URI) as out:
            write_in_pieces(out, b"x" * (2 * PART + 1))
            raise ValueError("join failed")
    assert stored(s3) is None
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_given_an_error_before_the_first_part_when_writing_then_no_object_is_left(s3):
    with pytest.raises(ValueError, match="join failed"):
        with SyncObjects(s3).writing(URI) as out:
            out.write(b"row 1\n")
            raise ValueError("join failed")
    assert stored(s3) is None


def test_given_a_stream_of_several_parts_when_stored_then_every_part_carries_a_crc32_s3_checked(s3):
    data = bytes(range(256)) * (2 * PART // 256 + 1000)
    with SyncObjects(s3).writing(URI) as out:
        write_in_pieces(out, data)
    head = s3.head_object(Bucket=BUCKET, Key="runs/r1/results.csv", ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-3"') and head.get("ChecksumCRC32")  # three parts, checksummed


def test_given_a_file_over_one_part_when_uploaded_then_its_parts_carry_a_crc32(s3, tmp_path):
    path = tmp_path / "rows.parquet"
    path.write_bytes(b"r" * (PART + 1))
    SyncObjects(s3).upload_file(str(path), URI)
    head = s3.head_object(Bucket=BUCKET, Key="runs/r1/results.csv", ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-2"') and head.get("ChecksumCRC32")
