"""``spar trainer serve``, ``spar train dpo|sft|status|cancel`` and ``spar adapters list|show``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from spar.client.enums import DISTRIBUTED_STRATEGY, JOB_STATE
from spar.errors import InvalidArgument
from spar_cli.commands.flags import (
    EXIT_ERROR,
    add_client_flags,
    add_group,
    add_serve_command,
    connect,
    print_json,
    run_service,
    settings_from,
)

#: CLI flag -> TrainingHyperparameters field.
HYPERPARAMETER_FLAGS = {
    "beta": "beta",
    "sft_weight": "sft_loss_weight",
    "lora_rank": "lora_rank",
    "lora_alpha": "lora_alpha",
    "lr": "learning_rate",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "max_length": "max_length",
    "seed": "seed",
}


def cmd_serve(args: argparse.Namespace) -> int:
    from services.trainer.server import serve

    settings = settings_from(args)
    if args.store:
        settings.trainer.store_dir = str(Path(args.store).expanduser().resolve())
    if args.state_dir:
        settings.trainer.state_dir = str(Path(args.state_dir).expanduser().resolve())
    return run_service(serve, settings)


def read_records(path: str) -> list[dict[str, Any]]:
    from spar.datasets import parse_jsonl

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"cannot read {path}: {exc}") from None
    return parse_jsonl(text, source=path)


def cmd_train(args: argparse.Namespace) -> int:
    from spar.client import TrainerClient

    records = read_records(args.data)
    hyperparameters: dict[str, Any] = {
        field: getattr(args, flag)
        for flag, field in HYPERPARAMETER_FLAGS.items()
        if getattr(args, flag) is not None
    }
    if args.target_modules:
        hyperparameters["target_modules"] = args.target_modules.split(",")
    with connect(TrainerClient, args) as client:
        data = client.upload_dataset(args.kind, records, name=Path(args.data).name)
        if not args.json:
            print(
                f"dataset {data.dataset_digest[:12]}: {data.records} records "
                f"({data.duplicates_dropped} duplicates dropped)",
                file=sys.stderr,
            )
        job = client.submit_job(
            args.kind,
            data.dataset_digest,
            role=args.role,
            iteration=args.iteration,
            parent=args.parent,
            base_model=args.base_model,
            hyperparameters=hyperparameters,
            world_size=args.world_size,
            strategy=args.strategy,
        )
        if args.detach:
            _print_job(job, args.json)
            return 0
        if not args.json:
            where = f", {job.queue_position} ahead of it" if job.queue_position else ""
            print(f"job {job.id} queued{where}", file=sys.stderr)
        try:
            job = _follow(client, job.id, quiet=args.json)
        except KeyboardInterrupt:
            print(
                f"\nstopped watching; job {job.id} goes on (spar train cancel {job.id})",
                file=sys.stderr,
            )
            return 130
    _print_job(job, args.json)
    return 0 if job.state == _succeeded() else EXIT_ERROR


def _succeeded() -> int:
    from spar.v1 import trainer_pb2

    return int(trainer_pb2.JOB_STATE_SUCCEEDED)


def _follow(client: Any, job_id: str, *, quiet: bool) -> Any:
    """Watches a job with a live progress bar; returns the final job."""
    from tqdm import tqdm

    from spar.v1 import trainer_pb2

    bar = None
    final = None
    try:
        for progress in client.watch_job(job_id):
            if progress.HasField("job"):
                final = progress.job
            if quiet or progress.state != trainer_pb2.JOB_STATE_RUNNING:
                continue
            if bar is None and progress.total_steps:
                bar = tqdm(total=progress.total_steps, unit="step", desc=job_id, file=sys.stderr)
            if bar is None:
                continue
            bar.n = progress.step
            postfix = {"epoch": f"{progress.epoch:.2f}", "loss": f"{progress.loss:.4f}"}
            if progress.reward_margin or progress.reward_accuracy:
                postfix["margin"] = f"{progress.reward_margin:.3f}"
                postfix["acc"] = f"{progress.reward_accuracy:.2f}"
            if progress.tokens_per_second:
                postfix["tok/s"] = f"{progress.tokens_per_second:.0f}"
            if progress.HasField("eta"):
                postfix["eta"] = f"{progress.eta.seconds}s"
            bar.set_postfix(postfix, refresh=False)
            bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    return final if final is not None else client.get_job(job_id)


def _print_job(job: Any, as_json: bool) -> None:
    if as_json:
        print_json(job)
        return
    state = JOB_STATE.label(job.state).upper()
    print(f"{job.id}: {state}")
    if job.result.name:
        print(f"adapter: {job.result.name}  (digest {job.result.digest})")
    if job.error:
        print(f"error: {job.error}", file=sys.stderr)


def cmd_job(args: argparse.Namespace) -> int:
    from spar.client import TrainerClient

    with connect(TrainerClient, args) as client:
        if args.train_command == "cancel":
            job = client.cancel_job(args.job_id)
        else:
            job = client.get_job(args.job_id)
    _print_job(job, args.json)
    return 0


def cmd_adapters(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    from spar.client import TrainerClient

    with connect(TrainerClient, args) as client:
        if args.adapters_command == "show":
            manifest = client.get_manifest(args.name)
            if args.json:
                print_json(manifest)
            else:
                import json

                print(
                    json.dumps(MessageToDict(manifest, preserving_proto_field_name=True), indent=2)
                )
            return 0
        reply = client.list_adapters(args.role)
    if args.json:
        print_json(reply)
        return 0
    if not reply.adapters:
        print("no adapter versions in the store")
    for m in reply.adapters:
        created = m.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
        parent = f"  parent {m.parent}" if m.parent else ""
        loss = m.metrics.get("train_loss")
        loss_text = f"  loss {loss:.4f}" if loss is not None else ""
        print(f"{m.version.name:32s} {created}  job {m.job_id}{loss_text}{parent}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = add_serve_command(sub, "trainer", "run the trainer and its artifact store", cmd_serve)
    serve.add_argument("--store", help="artifact store folder (SPAR_TRAINER__STORE_DIR)")
    serve.add_argument("--state-dir", help="datasets and job records (SPAR_TRAINER__STATE_DIR)")

    train = add_group(sub, "train", "train an adapter on the trainer")
    for kind, help_text in (
        ("dpo", "LoRA DPO on {prompt, chosen, rejected} pairs (actor)"),
        ("sft", "LoRA SFT on {prompt, completion} or {messages} records (refiner RFT)"),
    ):
        p = train.add_parser(kind, help=help_text)
        p.set_defaults(func=cmd_train, kind=kind)
        p.add_argument("--data", required=True, help="dataset, JSON Lines (TRL's format)")
        p.add_argument("--parent", default="", help="adapter version to continue training")
        p.add_argument("--role", default="", help="actor or refiner (default: by kind)")
        p.add_argument("--iteration", type=int, default=0, help="self-play iteration (name)")
        p.add_argument("--base-model", default="", help="base model folder (default: trainer's)")
        p.add_argument("--detach", action="store_true", help="print the job and return")
        p.add_argument(
            "--world-size", type=int, default=0,
            help="processes (GPUs) for the job; 0: the trainer's default (all its GPUs)",
        )  # fmt: skip
        p.add_argument(
            "--strategy", choices=DISTRIBUTED_STRATEGY.names, default="",
            help="how the job spreads over several GPUs (default ddp; fsdp shards the model)",
        )  # fmt: skip
        group = p.add_argument_group("hyperparameters (unset: the trainer's defaults)")
        for flag, kind_ in (
            ("--beta", float), ("--sft-weight", float), ("--lora-rank", int),
            ("--lora-alpha", int), ("--lr", float), ("--epochs", int), ("--batch-size", int),
            ("--grad-accum", int), ("--max-length", int), ("--seed", int),
        ):  # fmt: skip
            group.add_argument(flag, type=kind_, default=None)
        group.add_argument("--target-modules", default="", help="comma-separated module names")
        add_client_flags(p, "trainer")
    for name, help_text in (("status", "show a job"), ("cancel", "cancel a job")):
        p = train.add_parser(name, help=help_text)
        p.add_argument("job_id")
        add_client_flags(p, "trainer")
        p.set_defaults(func=cmd_job)

    adapters_sub = add_group(sub, "adapters", "adapter versions in the artifact store")
    p = adapters_sub.add_parser("list", help="list versions, newest first")
    p.add_argument("--role", default="", help="only actor or refiner versions")
    add_client_flags(p, "trainer")
    p.set_defaults(func=cmd_adapters)
    p = adapters_sub.add_parser("show", help="show one version's manifest")
    p.add_argument("name")
    add_client_flags(p, "trainer")
    p.set_defaults(func=cmd_adapters)
