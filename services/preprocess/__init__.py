"""The preprocess worker.

Arrow's C++ code (its CSV block reader among it) allocates from Arrow's compiled-in default pool,
mimalloc, which pyarrow.set_memory_pool does not change: mimalloc kept ~25 MB of freed pages of a
1 GiB arena resident through a staging (benchmark, 220k rows). The pool is chosen once, from
ARROW_DEFAULT_MEMORY_POOL, when pyarrow loads, so it is set here, before any module of the worker
imports pyarrow; jemalloc is what shared.dataplane.configure_arrow_memory uses for the rest.
"""
import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
