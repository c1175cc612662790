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


def test_refinement_loop_stop_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.refiner import options
    from spar.engine.protocol import LoopStop

    refiner = Settings().refiner
    assert refiner.loop_stop() == LoopStop(6, 64, 3)
    assert options.search_config(options.SearchOptions(), refiner, "").loop_stop == LoopStop(
        6, 64, 3
    )
    monkeypatch.setenv("SPAR_REFINER__LOOP_STOP_MAX_PATTERN", "0")
    assert Settings().refiner.loop_stop() is None
    monkeypatch.setenv("SPAR_REFINER__LOOP_STOP_MAX_PATTERN", "4")
    with pytest.raises(ValueError, match="loop_stop_min_pattern=6 exceeds loop_stop_max_pattern=4"):
        Settings()
    monkeypatch.setenv("SPAR_REFINER__LOOP_STOP_MAX_PATTERN", "64")
    monkeypatch.setenv("SPAR_REFINER__LOOP_STOP_REPEATS", "1")
    with pytest.raises(ValueError, match="loop_stop_repeats"):
        Settings()


def test_root_branch_setting_and_a_request_branch(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.refiner import options

    refiner = Settings().refiner
    default = options.search_config(options.SearchOptions(), refiner, "")
    assert (default.root_branch, default.branch) == (5, 3)
    # A request that shapes its own tree gets its branch at the root too.
    own = options.search_config(options.SearchOptions(branch=2), refiner, "")
    assert (own.root_branch, own.branch) == (2, 2)
    monkeypatch.setenv("SPAR_REFINER__ROOT_BRANCH", "0")  # 0: the root gets branch
    assert options.search_config(options.SearchOptions(), Settings().refiner, "").root_branch == 3
    monkeypatch.setenv("SPAR_REFINER__ROOT_BRANCH", "-1")
    with pytest.raises(ValueError, match="root_branch"):
        Settings()
