"""vLLM plugin entry point (`vllm.general_plugins`): registers the gated LLaMA lazily.

vLLM calls `register()` in every process it starts (engine core, workers), so the model
class is known wherever it is built. Registration is by a `"module:Class"` string: the
model module (which imports vLLM and torch kernels) is imported only when vLLM builds the
model, and importing this module imports nothing from vLLM at all.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

ARCH = "ProgressiveLlamaForCausalLM"
MODEL_REF = "progressive_serve.vllm_model:ProgressiveLlamaForCausalLM"


def register() -> bool:
    """Register `ProgressiveLlamaForCausalLM` with vLLM's model registry; idempotent.

    Returns True if this call registered it, False if it was already there.
    """
    from vllm import ModelRegistry

    if ARCH in ModelRegistry.get_supported_archs():
        return False
    ModelRegistry.register_model(ARCH, MODEL_REF)
    return True


def make_progressive_dir(src: str | Path, dst: str | Path, gates: list[float] | None = None) -> Path:
    """A copy of a Hugging Face LLaMA folder whose config selects the gated architecture.

    Weight and tokenizer files are hard-linked (copied where links fail), so the folder costs
    no space. `gates`, if given, are the initial per-layer alphas (`progressive_gates`).
    """
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name == "config.json" or not f.is_file():
            continue
        target = dst / f.name
        if target.exists():
            target.unlink()
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = [ARCH]
    if gates is not None:
        cfg["progressive_gates"] = [float(g) for g in gates]
    (dst / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return dst
