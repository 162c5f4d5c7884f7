"""The settings read from the environment: defaults and refusals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rayqueue import settings
from rayqueue.errors import InvalidArgumentError


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    settings.answer_timeout_s.cache_clear()
    yield
    settings.answer_timeout_s.cache_clear()


def test_answer_timeout_defaults_to_30_s_and_is_read_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYQUEUE_ANSWER_TIMEOUT_S", raising=False)
    assert settings.answer_timeout_s() == 30.0
    settings.answer_timeout_s.cache_clear()
    monkeypatch.setenv("RAYQUEUE_ANSWER_TIMEOUT_S", "2.5")
    assert settings.answer_timeout_s() == 2.5


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "thirty", ""])
def test_answer_timeout_must_be_positive(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RAYQUEUE_ANSWER_TIMEOUT_S", value)
    with pytest.raises(ValueError, match="RAYQUEUE_ANSWER_TIMEOUT_S") as err:
        settings.answer_timeout_s()
    assert isinstance(err.value, InvalidArgumentError)  # from the error tree
    assert repr(value) in str(err.value)
