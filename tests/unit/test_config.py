from __future__ import annotations

import pytest

from spar.config import Settings


def test_environment_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPAR_PORT", "6000")
    monkeypatch.setenv("SPAR_ENGINE__MAX_MODEL_LEN", "4096")
    monkeypatch.setenv("SPAR_LIMITS__MAX_N", "3")
    s = Settings()
    assert s.port == 6000
    assert s.engine.max_model_len == 4096
    assert s.limits.max_n == 3
    assert s.address("actor") == ("127.0.0.1", 6000, 9401)


def test_defaults_per_service() -> None:
    s = Settings()
    assert s.address("refiner")[1:] == (50052, 9402)
    assert Settings(metrics_port=-1).address("actor")[2] == -1
