"""The postprocess worker. Every way into it (its main, or collecting from the benchmarks) imports
this package first, so how the process allocates is settled here, before anything loads pyarrow
(shared/process_memory.py)."""
from shared.process_memory import settle_memory

settle_memory()
