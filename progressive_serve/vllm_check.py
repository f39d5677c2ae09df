"""Run the gated model inside vLLM and report greedy tokens, gates and parameter addresses.

`python -m progressive_serve.vllm_check MODEL_DIR --mode vanilla|gated|staged` prints one
JSON object. Each mode is its own process (vLLM keeps global state), eager and single
process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`: 3.6 s to start on the CPU build; docs/design.md).

* `vanilla`: the folder as it is (vLLM's own `LlamaForCausalLM`).
* `gated`: the same weights as `ProgressiveLlamaForCausalLM`, gates at 1; then each layer in
  `--drop` gated off in turn.
* `overhead`: generation time, vLLM's model vs the gated one at gates 1 (best of 5, alternated).
* `all`: the three below in one process, one engine after another.
* `staged`: start with `load_format="dummy"` and every gate 0, bind the embedding/head and
  the stages of `--stages` one by one through vLLM's weight loader, generating after each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def _env() -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # apply_model sends functions


def _llm(model_dir: Path, **kwargs):
    from vllm import LLM

    return LLM(
        model=str(model_dir),
        enforce_eager=True,
        max_model_len=256,
        skip_tokenizer_init=True,
        dtype=kwargs.pop("dtype", "float32"),
        seed=0,
        **kwargs,
    )


def _generate(llm, prompts: list[list[int]], n: int) -> list[list[int]]:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=n, temperature=0.0, detokenize=False, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


def run_all(
    model_dir: str | Path,
    prompts: list[list[int]],
    n: int,
    drop: list[int],
    stages: list[list[int]],
    dtype: str = "float32",
) -> dict:
    """Every mode in one process (vLLM's import is paid once), engines built one after another."""
    import gc

    _env()
    from vllm import ModelRegistry
    from vllm.plugins import load_general_plugins

    from progressive_serve.vllm_plugin import ARCH, register

    load_general_plugins()  # runs our entry point if the project is installed
    by_entry_point = ARCH in ModelRegistry.get_supported_archs()
    first, second = register(), register()
    out: dict = {
        "registration": {
            "by_entry_point": by_entry_point,
            "first": first,
            "second": second,
            "known": ARCH in ModelRegistry.get_supported_archs(),
            "lazy": "progressive_serve.vllm_model" not in sys.modules,
        }
    }
    for mode in ("vanilla", "gated", "staged"):
        out[mode] = run(model_dir, mode, prompts, n, drop, stages, dtype)
        gc.collect()
    return out


def overhead(
    model_dir: str | Path, prompts: list[list[int]], n: int, dtype: str = "float32", reps: int = 5
) -> dict:
    """Generation time of vLLM's own model vs the gated one (gates at 1), alternated, best of `reps`."""
    _env()
    from progressive_serve.vllm_plugin import make_progressive_dir, register

    register()
    gated_dir = make_progressive_dir(model_dir, Path(tempfile.mkdtemp(prefix="ps-vllm-")))
    engines = {"vanilla": _llm(Path(model_dir), dtype=dtype), "gated": _llm(gated_dir, dtype=dtype)}
    times: dict[str, list[float]] = {k: [] for k in engines}
    tokens = {}
    for _ in range(reps):
        for name, llm in engines.items():
            t = time.perf_counter()
            tokens[name] = _generate(llm, prompts, n)
            times[name].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    return {
        "mode": "overhead",
        "times_s": times,
        "best_s": best,
        "same_tokens": tokens["vanilla"] == tokens["gated"],
        "overhead": best["gated"] / best["vanilla"] - 1.0,
        "tokens_generated": n * len(prompts),
    }


def run(
    model_dir: str | Path,
    mode: str,
    prompts: list[list[int]],
    n: int,
    drop: list[int],
    stages: list[list[int]],
    dtype: str = "float32",
) -> dict:
    _env()
    if mode == "all":
        return run_all(model_dir, prompts, n, drop, stages, dtype)
    if mode == "overhead":
        return overhead(model_dir, prompts, n, dtype)
    from progressive_serve.config import LlamaShape
    from progressive_serve.vllm_plugin import ARCH, make_progressive_dir, register

    model_dir = Path(model_dir)
    layers = LlamaShape.from_dir(model_dir).num_layers
    out: dict = {"mode": mode}
    t = time.perf_counter()
    if mode == "vanilla":
        llm = _llm(model_dir, dtype=dtype)
        out["start_s"] = time.perf_counter() - t
        out["tokens"] = _generate(llm, prompts, n)
        return out
    from vllm.plugins import load_general_plugins

    load_general_plugins()  # the installed entry point, if the project is installed
    out["already_registered"] = not register()  # True when the entry point did it
    gated = make_progressive_dir(
        model_dir,
        Path(tempfile.mkdtemp(prefix="ps-vllm-")),
        gates=[0.0] * layers if mode == "staged" else None,
    )
    if mode == "gated":
        llm = _llm(gated, dtype=dtype)
        out["start_s"] = time.perf_counter() - t
        out["arch"] = llm.apply_model(lambda m: type(m).__name__)[0]
        out["tokens"] = _generate(llm, prompts, n)
        out["dropped"] = {}
        for layer in drop:
            llm.apply_model(
                lambda m, layer=layer: m.set_gates([0.0 if i == layer else 1.0 for i in range(layers)])
            )
            out["dropped"][str(layer)] = _generate(llm, prompts, n)
            out.setdefault("computed_when_dropped", {})[str(layer)] = llm.apply_model(lambda m: m.computed_layers())[0]
        return out
    if mode != "staged":
        raise ValueError(f"mode {mode!r}; known: vanilla, gated, staged")
    llm = _llm(gated, dtype=dtype, load_format="dummy")
    out["start_s"] = time.perf_counter() - t
    before = llm.apply_model(lambda m: m.data_pointers())[0]
    out["stages"] = []
    for j, stage in enumerate(stages):
        units = ([None] if j == 0 else []) + list(stage)
        t = time.perf_counter()
        loaded = llm.apply_model(lambda m, units=units: sorted(m.bind_layers(gated, units)))[0]
        bind_s = time.perf_counter() - t
        gates = llm.apply_model(lambda m: m.gate_values())[0]
        out["stages"].append(
            {
                "layers": stage,
                "bind_s": bind_s,
                "loaded": len(loaded),
                "gates": gates,
                "computed_layers": llm.apply_model(lambda m: m.computed_layers())[0],
                "tokens": _generate(llm, prompts, n),
            }
        )
    out["pointers_unchanged"] = llm.apply_model(lambda m: m.data_pointers())[0] == before
    out["arch"] = ARCH
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--mode", default="gated")
    ap.add_argument("--prompts", default="[[1, 2, 3, 4, 5]]", help="JSON list of token-id lists")
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--drop", default="[]", help="JSON list of layers to gate off one at a time")
    ap.add_argument("--stages", default="[]", help="JSON list of layer lists (staged mode)")
    ap.add_argument("--dtype", default="float32")
    a = ap.parse_args(argv)
    res = run(
        a.model_dir,
        a.mode,
        json.loads(a.prompts),
        a.tokens,
        json.loads(a.drop),
        json.loads(a.stages),
        a.dtype,
    )
    sys.stdout.write("PROGRESSIVE_SERVE_RESULT " + json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
