"""What `spar up --demo` says it starts from (issue 14: a second run starts from the
adapters the first one promoted)."""

from __future__ import annotations

from spar.v1 import common_pb2
from spar.v1 import coordinator_pb2 as pb
from spar_cli.commands.up import starting_point


def test_a_fresh_state_starts_from_the_base_model() -> None:
    assert starting_point(pb.CoordinatorState()) == (
        "starting from the base model (no adapters promoted yet)"
    )


def test_a_second_run_names_the_promoted_adapters() -> None:
    state = pb.CoordinatorState(
        actor=common_pb2.AdapterVersion(name="actor-1-6d29de7ff359", role="actor", iteration=1),
        refiner=common_pb2.AdapterVersion(name="refiner-1-0a1b2c3d4e5f"),
    )
    assert starting_point(state) == (
        "starting from the promoted adapters of an earlier run: actor-1-6d29de7ff359, "
        "refiner-1-0a1b2c3d4e5f"
    )
    only_actor = pb.CoordinatorState(actor=state.actor)
    assert starting_point(only_actor).endswith(": actor-1-6d29de7ff359")
