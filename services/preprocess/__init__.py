"""The preprocess worker. Every way into it (its main, or staging from the benchmarks) imports this
package first, so how the process allocates is settled here, before anything loads pyarrow
(shared/process_memory.py): Arrow's C++ default pool is jemalloc (mimalloc kept ~25 MB of freed
pages of a 1 GiB arena resident through a staging) and glibc's mmap threshold stays fixed.
"""
from shared.process_memory import settle_memory

settle_memory()
