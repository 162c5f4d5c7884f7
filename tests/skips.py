"""No silent skips: with ``RAYQUEUE_REQUIRE_REAL_PARTS=1`` (CI sets it) a skipped test
fails the run unless it is on the allow-list below, with its reason.

Loaded as a pytest plugin from ``tests/conftest.py``. Tests skip plainly where a real
part (Chromium, Prometheus, redis-server) is missing on a developer's machine; CI
installs them all, so there a skip means a test that proved nothing.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

#: Tests that may skip even in CI, each with why.
ALLOWED: dict[str, str] = {
    "tests/faults/test_resource_faults.py::test_25_oom_killed_attempts_count_as_lost":
        "provoking Ray's OOM killer on a shared 24 GiB machine is unsafe; an OOM kill is a "
        "worker death, which scenarios 1-3 cover",
}


def required() -> bool:
    """Whether missing real parts fail the run rather than skip (CI)."""
    return os.environ.get("RAYQUEUE_REQUIRE_REAL_PARTS") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and required() and item.nodeid not in ALLOWED and not hasattr(
            report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"skipped, and RAYQUEUE_REQUIRE_REAL_PARTS=1 allows no skip that "
                           f"is not in tests/skips.py ALLOWED: {reason}")
