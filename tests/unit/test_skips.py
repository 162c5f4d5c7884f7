"""The no-silent-skip hook (tests/skips.py), run in a pytester sandbox."""

from __future__ import annotations

import pytest

SKIPPING = """
import pytest

def test_needs_a_missing_part():
    pytest.skip("chromium is not installed")

@pytest.mark.skip(reason="declared")
def test_marked():
    pass

def test_fine():
    pass
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
         required: bool) -> pytest.RunResult:
    pytester.makeconftest('pytest_plugins = ["tests.skips"]')
    pytester.makepyfile(test_sandbox=SKIPPING)
    monkeypatch.setenv("RAYQUEUE_REQUIRE_REAL_PARTS", "1" if required else "0")
    return pytester.runpytest_inprocess("-p", "no:cacheprovider")


def test_skips_fail_the_run_when_real_parts_are_required(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(pytester, monkeypatch, required=True)
    result.assert_outcomes(passed=1, failed=1, errors=1)  # a marked skip fails at setup
    result.stdout.fnmatch_lines(["*allows no skip*chromium is not installed*"])


def test_skips_stay_skips_on_a_developers_machine(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(pytester, monkeypatch, required=False).assert_outcomes(passed=1, skipped=2)


def test_every_allowed_skip_names_a_test_that_exists() -> None:
    from pathlib import Path

    from tests.skips import ALLOWED

    root = Path(__file__).resolve().parents[2]
    for nodeid, reason in ALLOWED.items():
        path, name = nodeid.split("::")
        assert reason and f"def {name}(" in (root / path).read_text(), nodeid
