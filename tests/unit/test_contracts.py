"""The committed stubs match the .proto contracts, and the contracts are complete."""

from __future__ import annotations

from spar import codegen
from spar.v1 import (
    actor_pb2,
    adapter_host_pb2,
    common_pb2,
    coordinator_pb2,
    refiner_pb2,
    trainer_pb2,
)


def test_generated_stubs_are_current() -> None:
    stale = codegen.stale_stubs()
    assert not stale, f"stubs out of date with proto/: {stale}; run python -m spar.codegen"


def test_every_service_has_its_methods() -> None:
    expected = {
        (actor_pb2, "Actor"): {"Generate", "GenerateStream"},
        (adapter_host_pb2, "AdapterHost"): {
            "StageAdapter",
            "ActivateAdapter",
            "RetireAdapter",
            "ListAdapters",
        },
        (refiner_pb2, "Refiner"): {"Judge", "Refine", "RefineStream", "Answer"},
        (trainer_pb2, "Trainer"): {
            "UploadDataset",
            "SubmitJob",
            "WatchJob",
            "CancelJob",
            "GetJob",
        },
        (trainer_pb2, "ArtifactStore"): {"ListAdapters", "GetManifest", "FetchAdapter"},
        (coordinator_pb2, "Coordinator"): {
            "StartIteration",
            "WatchIteration",
            "GetState",
            "Rollback",
            "ListAudit",
            "Promote",
            "Reject",
        },
    }
    for (module, service), methods in expected.items():
        desc = module.DESCRIPTOR.services_by_name[service]
        assert desc.full_name == f"spar.v1.{service}"
        assert {m.name for m in desc.methods} == methods


def test_streaming_shapes() -> None:
    actor = actor_pb2.DESCRIPTOR.services_by_name["Actor"].methods_by_name
    assert actor["GenerateStream"].server_streaming
    trainer = trainer_pb2.DESCRIPTOR.services_by_name["Trainer"].methods_by_name
    assert trainer["UploadDataset"].client_streaming
    assert trainer["WatchJob"].server_streaming
    store = trainer_pb2.DESCRIPTOR.services_by_name["ArtifactStore"].methods_by_name
    assert store["FetchAdapter"].server_streaming


def test_cost_budget_constraint_and_version_are_messages() -> None:
    for name in ("SearchBudget", "SearchCost", "VerifiableConstraint", "AdapterVersion"):
        assert name in common_pb2.DESCRIPTOR.message_types_by_name
    cost = common_pb2.SearchCost.DESCRIPTOR.fields_by_name
    assert {"nodes_expanded", "judge_samples", "judge", "refine", "wall_time", "outcome"} <= set(
        cost
    )
