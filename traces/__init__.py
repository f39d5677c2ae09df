"""Arrival traces for the simulator: real public traces, users' own logs, or a calibrated stand-in.

The simulator calls `open_trace(spec, trace_dir=..., duration_s=..., seed=..., **options)`
and iterates the returned `Trace` (once per policy combination): `Request`s come out
lazily, ordered by `arrival_s`, numbered from 0 and cut at `duration_s`. `spec` is a name
(`azure_functions` [the default], `azure_functions_2019`, `azure_functions_2021`,
`azure_llm_2023`, `azure_llm_code`, `azure_llm_conv`, `azure_llm_2024[_code|_conv]`,
`burstgpt`, `synthetic`) or a path to a file or folder, recognised by its header.
`Trace.name` says what was used (real files and where, or the synthetic fallback and
why); `Trace.details` lists every choice made. Bad input raises `TraceError`, whose
message names file, line and field.
"""

from traces.base import Trace
from traces.errors import TraceError
from traces.registry import NAMES, open_trace
from traces.request import Request

__all__ = ["NAMES", "Request", "Trace", "TraceError", "open_trace"]
