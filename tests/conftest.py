"""Suite-wide order: the longest files first, so that `make test`'s processes (pytest-xdist,
`--dist loadfile --no-loadscope-reorder`, which hands files out in this order rather than by their
number of tests) end together instead of one of them starting the real fine-tune last."""
from __future__ import annotations

import pytest

# Minutes each on two cores (the rest of the suite is seconds a file): a real fine-tune through the
# service, the real engine's tests, and the e2e files that start stacks of their own.
LONGEST_FIRST = (
    "tests/real/test_real_customization_service.py",
    "tests/real/test_real_customization.py",
    "tests/real/test_real_service.py",
    "tests/real/test_real_engine.py",
    "tests/e2e/test_crash_recovery.py",
    "tests/e2e/test_bedrock_restart.py",
    "tests/e2e/test_evaluate.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file, and of the other files, is kept
