"""How a data-plane worker process (preprocess, postprocess) allocates, settled by its package's
import, before pyarrow loads.

Three defaults held ~85 MB of postprocess's peak (local stack, 220k rows: 354 MB before, 270 after):
- Arrow's C++ default pool, which the Parquet reader and writer allocate from whatever pyarrow's own
  default is (ParquetFile takes no pool), is picked from ARROW_DEFAULT_MEMORY_POOL once, as the
  library loads. Left as mimalloc, it kept ~30 MB of freed pages while rows.parquet was read;
  jemalloc is the pool the data plane uses already (shared.dataplane.configure_arrow_memory).
- pyarrow's first conversion of a Python value (pa.array, or a compute function given a Python
  scalar) imports pandas where pandas is installed, ~30 MB, only to ask whether the value is a
  pandas object. Pandas is no dependency of the workers (the dev venv has it for the benchmark's
  input generator, the `bench` extra): as deployed, the import fails and pyarrow goes on without
  it. The worker's main (and the benchmark's child) make it fail the same way, whatever the venv
  holds (keep_pandas_out).
- glibc serves a large block from mmap, returned when freed, only until a freed one raises its
  threshold (up to 32 MB): from then on the result upload's 8 MiB parts came from the heaps, whose
  freed space was kept (~17 MB). The threshold is fixed at 4 MiB instead: 128 KiB (glibc's first
  value) kept ~10 MB less but cost ~15% more CPU, mapping every network read and numpy array.
"""
from __future__ import annotations

import ctypes
import importlib.abc
import os
import sys

# Blocks from this size on are mapped on their own and unmapped when freed.
MMAP_THRESHOLD = 4 << 20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


def settle_memory() -> None:
    """Arrow's C++ default pool is jemalloc (if pyarrow is not loaded yet) and glibc's mmap
    threshold stays fixed (idempotent); run as the package is imported."""
    if "pyarrow" not in sys.modules:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    _fix_mmap_threshold()


def keep_pandas_out() -> None:
    """pandas cannot be imported in this process from now on (idempotent). Only for a process that
    is the worker (its main, the benchmark's child): a finder that refuses a module changes every
    later import in the process, so importing the package does not do it."""
    if "pandas" not in sys.modules and not any(isinstance(f, NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, NoPandas())


class NoPandas(importlib.abc.MetaPathFinder):
    """Refuses pandas, as an environment without it would: pyarrow takes that as 'no pandas'."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r} (not in a worker's dependencies)", name=name)
        return None


def _fix_mmap_threshold() -> None:
    # Setting the threshold is what turns glibc's raising of it off (mallopt(3)); another libc
    # (musl, macOS) has no such parameter and is left alone.
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
