"""Program checks of IFEval's 25 verifiable instruction types, and IFEval's four scores.

The refiner's ``verifier`` and ``hybrid`` judges use :func:`check`; the coordinator's
evaluation uses :func:`check` and :func:`scores` on held-out IFEval-format prompts.

Which implementation, and why: the checkers are those of **lm-eval** (EleutherAI's
lm-evaluation-harness, pinned ``lm-eval[ifeval]==0.4.13``), called through its own
``test_instruction_following_strict`` / ``_loose`` so that "strict" and "loose" mean
exactly what IFEval leaderboards mean. lm-eval is the harness most IFEval numbers are
reported with, and it is maintained (its copy of Google's checkers gets fixes; dead
checkers are documented). The alternative seen on PyPI, ``if-verifiable`` 0.1.2, is a
young one-person repackaging of the same Google code with fewer dependencies; lm-eval
costs ~30 more wheels (scipy, scikit-learn, evaluate, ...), all of which install
cleanly next to vLLM here without changing any existing pin, and ~4 s of import time,
paid once per process (lazily, on the first check).

Offline data: the sentence and word tokenizers need NLTK's ``punkt_tab`` (English),
which ``nltk.download`` cannot fetch here. :func:`install_punkt_tab` takes it from a
pinned, hash-checked PyPI wheel that bundles it (``llama-index-core``; only the
English tables are extracted, nothing is installed) into ``<venv>/nltk_data``, where
NLTK looks by default. ``scripts/bootstrap.sh`` runs it (``python -m spar.ifeval
install-data``); it is idempotent and also accepts an already downloaded wheel.

Repeatability: the letter-frequency checker draws a random letter when it is given a
non-letter, and language detection is randomised. Every check runs with Python's
global RNG seeded from the constraint (state restored afterwards) and langdetect's
factory seeded, so the same text always gets the same result.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from spar.errors import FailedPrecondition, InvalidArgument
from spar.install_report import report_install

#: The PyPI wheel that carries NLTK's punkt_tab, pinned by version and sha256.
PUNKT_WHEEL = ("llama-index-core", "0.14.25")
PUNKT_WHEEL_FILE = "llama_index_core-0.14.25-py3-none-any.whl"
PUNKT_WHEEL_SHA256 = "caa7d9c5ac9b13dc33400cf8d5e92e689b6d1e4497eb9bfa50d6f52ca2eb22a1"
_PUNKT_IN_WHEEL = "llama_index/core/_static/nltk_cache/tokenizers/punkt_tab/"
_PUNKT_FILES = (
    "english/abbrev_types.txt",
    "english/collocations.tab",
    "english/ortho_context.tab",
    "english/sent_starters.txt",
    "README",
)

#: The 25 instruction types of IFEval (lm-eval's registry holds exactly these).
INSTRUCTION_IDS = (
    "change_case:capital_word_frequency",
    "change_case:english_capital",
    "change_case:english_lowercase",
    "combination:repeat_prompt",
    "combination:two_responses",
    "detectable_content:number_placeholders",
    "detectable_content:postscript",
    "detectable_format:constrained_response",
    "detectable_format:json_format",
    "detectable_format:multiple_sections",
    "detectable_format:number_bullet_lists",
    "detectable_format:number_highlighted_sections",
    "detectable_format:title",
    "keywords:existence",
    "keywords:forbidden_words",
    "keywords:frequency",
    "keywords:letter_frequency",
    "language:response_language",
    "length_constraints:nth_paragraph_first_word",
    "length_constraints:number_paragraphs",
    "length_constraints:number_sentences",
    "length_constraints:number_words",
    "punctuation:no_comma",
    "startend:end_checker",
    "startend:quotation",
)


@dataclass(frozen=True)
class Constraint:
    """One verifiable constraint: an IFEval instruction id and its checker's kwargs."""

    instruction_id: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConstraintCheck:
    """Whether a response follows one verifiable constraint."""

    instruction_id: str
    strict: bool
    """Followed by the response as is (IFEval "strict")."""
    loose: bool
    """Followed by some loosened variant of the response (IFEval "loose")."""
    description: str = ""
    """The requirement in words (the checker's own description), for critiques."""
    error: str = ""
    """Why the constraint could not be checked; strict and loose are False then."""


@dataclass(frozen=True)
class IfevalScores:
    """IFEval's four accuracies over a set of prompts."""

    prompt_strict: float
    prompt_loose: float
    instruction_strict: float
    instruction_loose: float
    prompts: int
    instructions: int


# -- offline NLTK data ---------------------------------------------------------------


def nltk_data_dir() -> Path:
    """Where punkt_tab is installed: $NLTK_DATA's first entry, else <prefix>/nltk_data."""
    env = os.environ.get("NLTK_DATA", "")
    first = env.split(os.pathsep)[0] if env else ""
    return Path(first) if first else Path(sys.prefix) / "nltk_data"


def punkt_tab_installed(root: Path | None = None) -> bool:
    base = (root or nltk_data_dir()) / "tokenizers" / "punkt_tab"
    return all((base / name).is_file() for name in _PUNKT_FILES)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_wheel(dest: Path) -> Path:
    name, version = PUNKT_WHEEL
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--only-binary", ":all:", "-d", str(dest), f"{name}=={version}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheel = dest / PUNKT_WHEEL_FILE
    if proc.returncode != 0 or not wheel.is_file():
        raise FailedPrecondition(
            f"could not download {name}=={version} from the package index to get NLTK's "
            f"punkt_tab ({proc.stderr.strip()[-400:]}); pass --wheel with a copy of "
            f"{PUNKT_WHEEL_FILE}"
        )
    return wheel


def install_punkt_tab(dest: Path | None = None, wheel: Path | None = None) -> tuple[Path, bool]:
    """Installs NLTK's English punkt_tab under dest (idempotent); returns (dir, installed)."""
    root = dest or nltk_data_dir()
    target = root / "tokenizers" / "punkt_tab"
    if punkt_tab_installed(root):
        return target, False
    with tempfile.TemporaryDirectory() as tmp:
        path = wheel or _download_wheel(Path(tmp))
        digest = _sha256(path)
        if digest != PUNKT_WHEEL_SHA256:
            raise FailedPrecondition(
                f"{path} has sha256 {digest[:12]}…, expected {PUNKT_WHEEL_SHA256[:12]}… "
                f"({PUNKT_WHEEL_FILE}); refusing to extract tokenizer data from it"
            )
        root.mkdir(parents=True, exist_ok=True)
        # Extract next to the target and rename: a crash never leaves a half-written folder.
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".punkt_tab-"))
        try:
            with zipfile.ZipFile(path) as zf:
                for name in _PUNKT_FILES:
                    out = staging / name
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(zf.read(_PUNKT_IN_WHEEL + name))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)  # a partial earlier install
            staging.chmod(0o755)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target, True


# -- checks --------------------------------------------------------------------------

_lock = threading.Lock()
_modules: tuple[ModuleType, ModuleType] | None = None


def _lm_eval() -> tuple[ModuleType, ModuleType]:
    """lm-eval's (registry, utils) modules, imported once, after checking the data."""
    global _modules
    with _lock:
        if _modules is None:
            if not punkt_tab_installed() and not _nltk_finds_punkt_tab():
                raise FailedPrecondition(
                    "NLTK's punkt_tab tokenizer data is missing, so constraints cannot be "
                    "checked; run `python -m spar.ifeval install-data` (scripts/bootstrap.sh "
                    "does) or set NLTK_DATA to a folder that has tokenizers/punkt_tab"
                )
            from langdetect import DetectorFactory  # type: ignore[import-untyped]
            from lm_eval.tasks.ifeval import (  # type: ignore[import-untyped]
                instructions_registry,
                utils,
            )

            DetectorFactory.seed = 0
            _modules = (instructions_registry, utils)
        return _modules


def load() -> None:
    """Imports the checkers now (a few seconds), e.g. while a server starts."""
    _lm_eval()


def _nltk_finds_punkt_tab() -> bool:
    import nltk  # type: ignore[import-untyped]

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        return False
    return True


def _plain(value: Any) -> Any:
    """Struct numbers arrive as floats; the checkers index and count with ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _seed_for(c: Constraint) -> int:
    key = json.dumps([c.instruction_id, dict(c.kwargs)], sort_keys=True, default=str)
    return zlib.crc32(key.encode())


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _kwargs(c: Constraint) -> dict[str, Any]:
    return {k: _plain(v) for k, v in c.kwargs.items()}


def _build(registry: ModuleType, c: Constraint, instruction: str) -> tuple[Any, str]:
    """The checker object and its description; InvalidArgument when unusable."""
    cls = registry.INSTRUCTION_DICT.get(c.instruction_id)
    if cls is None:
        raise InvalidArgument(
            f"unknown instruction id {c.instruction_id!r}; use one of the 25 IFEval ids, "
            "e.g. length_constraints:number_words"
        )
    checker = cls(c.instruction_id)
    kwargs = _kwargs(c)
    needed = list(checker.get_instruction_args_keys() or [])
    # lm-eval drops falsy kwargs and the checker then draws a random value: refuse that.
    missing = [k for k in needed if k != "prompt_to_repeat" and not kwargs.get(k)]
    unknown = sorted(set(kwargs) - set(needed))
    if unknown:
        raise InvalidArgument(
            f"{c.instruction_id} takes kwargs {needed or 'none'}; got unknown {unknown}"
        )
    if missing:
        raise InvalidArgument(f"{c.instruction_id} needs non-empty kwargs {missing}")
    try:
        description = checker.build_description(**{k: v for k, v in kwargs.items() if v})
        args = checker.get_instruction_args()
        if args and "prompt" in args:
            description = checker.build_description(prompt=instruction)
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidArgument(f"{c.instruction_id}: bad kwargs {kwargs}: {exc}") from exc
    return checker, str(description)


def validate(constraints: Sequence[Constraint], instruction: str = "") -> list[str]:
    """Raises InvalidArgument naming ``constraints[i]``; returns the descriptions."""
    registry, _ = _lm_eval()
    out = []
    for i, c in enumerate(constraints):
        try:
            with _seeded(_seed_for(c)):
                out.append(_build(registry, c, instruction)[1])
        except InvalidArgument as exc:
            raise InvalidArgument(f"constraints[{i}]: {exc.message}") from None
    return out


def check(
    instruction: str, response: str, constraints: Sequence[Constraint]
) -> list[ConstraintCheck]:
    """Strict and loose results of each constraint on response (IFEval's definitions)."""
    registry, utils = _lm_eval()
    results = []
    for c in constraints:
        seed = _seed_for(c)
        # Each build draws the same "random" values (e.g. the letter of a letter check
        # given a non-letter), so description, strict and loose agree.
        try:
            with _seeded(seed):
                _, description = _build(registry, c, instruction)
        except InvalidArgument as exc:
            results.append(ConstraintCheck(c.instruction_id, False, False, error=exc.message))
            continue
        inp = utils.InputExample(
            key=0, instruction_id_list=[c.instruction_id], prompt=instruction, kwargs=[_kwargs(c)]
        )
        try:
            with _seeded(seed):
                strict = utils.test_instruction_following_strict(inp, response)
            with _seeded(seed):
                loose = utils.test_instruction_following_loose(inp, response)
        except Exception as exc:  # a checker crashing on odd text counts as not followed
            results.append(
                ConstraintCheck(
                    c.instruction_id, False, False, description, f"checker failed: {exc}"
                )
            )
            continue
        results.append(
            ConstraintCheck(
                c.instruction_id,
                bool(strict.follow_instruction_list[0]),
                bool(loose.follow_instruction_list[0]),
                description,
            )
        )
    return results


def scores(results: Sequence[Sequence[ConstraintCheck]]) -> IfevalScores:
    """IFEval's prompt- and instruction-level strict and loose accuracies."""
    prompts = [r for r in results if r]
    flat = [c for r in prompts for c in r]
    if not prompts:
        raise InvalidArgument("no prompt with constraints to score")
    return IfevalScores(
        prompt_strict=sum(all(c.strict for c in r) for r in prompts) / len(prompts),
        prompt_loose=sum(all(c.loose for c in r) for r in prompts) / len(prompts),
        instruction_strict=sum(c.strict for c in flat) / len(flat),
        instruction_loose=sum(c.loose for c in flat) / len(flat),
        prompts=len(prompts),
        instructions=len(flat),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spar.ifeval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install-data", help="install NLTK's punkt_tab offline (idempotent)")
    inst.add_argument("--dest", type=Path, default=None, help="NLTK data folder")
    inst.add_argument("--wheel", type=Path, default=None, help=f"a local {PUNKT_WHEEL_FILE}")
    args = parser.parse_args(argv)
    return report_install(lambda: install_punkt_tab(args.dest, args.wheel))


if __name__ == "__main__":
    sys.exit(main())
