"""Shared helpers for the traces tests: where the real samples are, and tiny valid files."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"
AF2019 = SHARED / "azure_functions_2019" / "invocations_per_function_md.anon.d01.csv"
LLM_CODE = SHARED / "azure_llm_2023" / "AzureLLMInferenceTrace_code.csv"
LLM_CONV = SHARED / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"
BURSTGPT = SHARED / "burstgpt" / "BurstGPT_1.csv"


def need(path: Path) -> Path:
    """Skip the test cleanly when a shared sample is not beside the checkout."""
    if not path.exists():
        pytest.skip(f"sample {path} not present")
    return path


HEADER_2019 = "HashOwner,HashApp,HashFunction,Trigger," + ",".join(str(i) for i in range(1, 1441))


def row_2019(owner: str, app: str, fn: str, trigger: str, counts: dict[int, int]) -> str:
    """One invocations row with `counts[minute_index] = n` (0-based minutes)."""
    cells = ["0"] * 1440
    for m, n in counts.items():
        cells[m] = str(n)
    return f"{owner},{app},{fn},{trigger}," + ",".join(cells)


def write_2019(folder: Path, rows: list[str], day: int = 1, header: str = HEADER_2019) -> Path:
    path = folder / f"invocations_per_function_md.anon.d{day:02d}.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path
