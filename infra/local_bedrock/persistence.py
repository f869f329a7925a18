"""The service's state on disk, under its home (LOCAL_BEDROCK_HOME), so that jobs, custom models
and provisioned throughputs survive a restart of the service, as they would on AWS.

Each store saves itself as one JSON document (`<home>/state/<name>.json`), written whole to a
temporary file and renamed over the old one, so a crash mid-write leaves the previous state.
The stores are small (thousands of entries at most), so a whole-file write per change is cheap.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson


class StateDir:
    """Named JSON documents under `<home>/state`; one per store."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._dir = home / "state"
        self._dir.mkdir(parents=True, exist_ok=True)

    def load(self, name: str) -> list[dict[str, Any]]:
        """The records saved under `name`, or none when nothing was saved yet."""
        path = self._dir / f"{name}.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            records = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); move it away to start without that state") from None
        if not isinstance(records, list):
            raise ValueError(f"{path} does not hold a list of records; move it away to start without that state")
        return records

    def save(self, name: str, records: list[dict[str, Any]]) -> None:
        """Replace what is saved under `name`, atomically."""
        payload = orjson.dumps(records, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z)
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._dir / f"{name}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def area(self, *parts: str) -> Path:
        """A directory under the home for a resource's files (custom model weights, training data)."""
        path = self.home.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def clear_areas(self, *names: str) -> None:
        """Remove the directories of resources that no longer exist (a reset of the service)."""
        for name in names:
            shutil.rmtree(self.home / name, ignore_errors=True)
