"""How the postprocess process allocates, settled by importing the package
(shared/process_memory.py): each test runs a fresh interpreter, since what is
settled is settled once, as pyarrow loads."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_fresh(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_parquet_reader_and_writer_allocate_from_jemalloc_not_mimalloc(tmp_path: Path) -> None:
    # Given the package imported first, as the worker's main and the benchmarks do
    # When a Parquet file is written and read back in batches, as assemble reads rows.parquet
    got = run_fresh(f"""
import json, services.postprocess
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
pq.write_table(pa.table({{"a": np.arange(100_000)}}), {str(tmp_path / "rows.parquet")!r}, row_group_size=10_000)
rows = sum(b.num_rows for b in pq.ParquetFile({str(tmp_path / "rows.parquet")!r}, buffer_size=1 << 20).iter_batches())
print(json.dumps({{"rows": rows, "mimalloc": pa.mimalloc_memory_pool().num_allocations(),
                  "jemalloc": pa.jemalloc_memory_pool().num_allocations()}}))
""")
    # Then nothing went through mimalloc, which kept ~30 MB of freed pages in the benchmark
    assert got["rows"] == 100_000
    assert got["mimalloc"] == 0 and got["jemalloc"] > 0


def test_converting_python_values_does_not_import_pandas(tmp_path: Path) -> None:
    # Given a pandas on the path (a stand-in that leaves a mark when imported, so this runs where
    # the venv has no pandas, as in CI; the bench extra installs the real one) and the process set
    # up as the worker's main sets it up
    stand_in = tmp_path / "pandas"
    stand_in.mkdir()
    (stand_in / "__init__.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n__version__ = '2.2.0'\n")
    # When pyarrow converts Python values, which makes it look for pandas each time
    got = run_fresh(f"""
import json, sys
sys.path.insert(0, {str(tmp_path)!r})
import services.postprocess.collecting
from shared.process_memory import keep_pandas_out
keep_pandas_out()
import numpy as np, pyarrow as pa, pyarrow.compute as pc
ids = pa.array(["0000000001", "x"])
named = pc.and_(pc.equal(pc.utf8_length(ids), 10), pc.ascii_is_decimal(ids)).to_pylist()
print(json.dumps({{"named": named, "numbers": pa.array(np.arange(3)).to_pylist(), "pandas": "pandas" in sys.modules}}))
""")
    # Then the answers are Arrow's as ever, and pandas (~30 MB, no dependency of the worker) stayed out
    assert got == {"named": [True, False], "numbers": [0, 1, 2], "pandas": False}
    assert not (tmp_path / "imported").exists(), "pandas was imported"


def test_a_large_block_is_mapped_on_its_own_after_one_was_freed() -> None:
    # Given the package imported, and an 8 MiB block (an upload part) freed once
    # When another is allocated
    got = run_fresh("""
import ctypes, json, services.postprocess
libc = ctypes.CDLL(None)
if not hasattr(libc, "mallinfo2"):
    print(json.dumps({"glibc": False})); raise SystemExit
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
part = bytearray(8 << 20); del part
part = bytearray(8 << 20)
print(json.dumps({"glibc": True, "mapped": libc.mallinfo2().hblkhd}))
""")
    if not got["glibc"]:
        pytest.skip("not glibc")
    # Then it is mapped too (so freeing it unmaps it), not carved from a heap that keeps it once freed
    assert got["mapped"] >= 8 << 20
