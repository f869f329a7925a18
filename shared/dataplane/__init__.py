"""The data plane: input files to Bedrock batch records and back, as pure functions over streams.

readers (file -> RecordBatches of strings), templates (rows -> prompts), shared.domain.bodies
(prompt -> model body), splitter (record sizes -> job files), prepare (the preprocess pass) and
assemble (the postprocess join). No AWS calls: callers hand in streams and files.
"""
from __future__ import annotations

import pyarrow as pa

_configured = False


def configure_arrow_memory() -> None:
    """Use jemalloc with immediate page return for Arrow buffers (idempotent).

    The data plane allocates and frees a few MB per batch, on several threads. Arrow's default
    mimalloc keeps freed pages per thread, which showed as ~100 MB of extra peak RSS in the
    benchmark; jemalloc with decay 0 returns them at once and was also faster here.
    """
    global _configured
    if _configured:
        return
    _configured = True
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowNotImplementedError):  # a build without jemalloc
        pass
