"""Job hyperparameters: the paper's defaults and the checks on what callers set."""

from __future__ import annotations

import pytest

from services.trainer.hyperparameters import Bounds, defaults, resolve
from spar.errors import InvalidArgument


def test_dpo_defaults_are_the_papers() -> None:
    hp = resolve("dpo", {}, defaults("dpo", max_length=1024), Bounds())
    assert (hp.beta, hp.sft_loss_weight) == (0.1, 0.1)
    assert hp.learning_rate == 5e-6 and hp.lora_rank == 16 and hp.lora_alpha == 32
    assert "q_proj" in hp.target_modules and "down_proj" in hp.target_modules
    assert defaults("sft", max_length=512).learning_rate == 1e-5


def test_given_fields_override_and_round_trip() -> None:
    given = {"lora_rank": 8, "learning_rate": 1e-4, "target_modules": ["q_proj", "v_proj"]}
    hp = resolve("dpo", given, defaults("dpo", max_length=256), Bounds())
    assert hp.lora_rank == 8 and hp.target_modules == ("q_proj", "v_proj")
    assert type(hp).from_dict(hp.as_dict()) == hp


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"beta": 0.0}, "hyperparameters.beta=0.0 must be in (0.0"),
        ({"lora_rank": 128}, "hyperparameters.lora_rank=128 must be between 1 and 64"),
        ({"learning_rate": float("nan")}, "hyperparameters.learning_rate=nan"),
        ({"epochs": 0}, "hyperparameters.epochs=0"),
        ({"max_length": 100_000}, "hyperparameters.max_length=100000"),
        ({"target_modules": ["q_proj", "../x"]}, "'../x' is not a module name"),
        ({"lora_dropout": 1.0}, "hyperparameters.lora_dropout=1.0"),
    ],
)
def test_bad_values_name_the_field(given: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        resolve("dpo", given, defaults("dpo", max_length=256), Bounds())
    assert message in err.value.message


def test_beta_is_refused_for_sft() -> None:
    with pytest.raises(InvalidArgument, match="beta applies to DPO"):
        resolve("sft", {"beta": 0.2}, defaults("sft", max_length=256), Bounds())
