"""Named points where a test can make a worker die, to reproduce a crash window exactly.

`QUARRY_CRASH_AT=preprocess.after_jobs_recorded` (comma-separated for several) makes the worker
exit at once with status 137, as a kill -9 would, when it reaches that point. Unset (always, in
production) a crash point does nothing. Tests only: the e2e crash-recovery tests restart the
worker without it and check that the run still finishes.
"""
from __future__ import annotations

import os
import sys


def crash_point(name: str) -> None:
    """Die here, now, if QUARRY_CRASH_AT names this point."""
    wanted = os.environ.get("QUARRY_CRASH_AT")
    if wanted and name in wanted.split(","):
        sys.stderr.write(f'{{"event": "crash_point_reached", "point": "{name}"}}\n')
        sys.stderr.flush()
        os._exit(137)
