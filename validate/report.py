"""The Markdown report: every measured figure, next to the physical limit it is bounded by.

A reader should be able to tell from the report alone whether a slow cold start is the
disk, the link, the loader or the engine: so each bandwidth row shows the limit and the
ratio, and each cold start is split into its parts.
"""

from __future__ import annotations

from pathlib import Path

from validate.results import Measurements

BANDWIDTH_ROWS = (
    ("disk_cold", "disk read, cold (page cache bypassed)", "disk"),
    ("disk_warm", "disk read, warm (page cache)", None),
    ("h2d_pinned", "host to device, pinned", "pcie"),
    ("h2d_pageable", "host to device, pageable", "pcie"),
    ("d2h_pinned", "device to host, pinned", "pcie"),
    ("d2h_pageable", "device to host, pageable", "pcie"),
    ("weight_loader", "weight loader (staged, end to end)", "loader"),
)


def fmt(v: float | None, digits: int = 3) -> str:
    """A number for a table cell; 'n/a' for unknown, so a missing limit never prints as 0."""
    if v is None:
        return "n/a"
    if v != v:  # NaN
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{max(1, digits - 1)}f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def limit_for(m: Measurements, key: str | None) -> tuple[float | None, str]:
    """The physical limit (GB/s) a bandwidth row is compared with, and what it is."""
    if key == "loader":
        slowest = m.engine.get("loader_link_gbps")
        return slowest, str(m.engine.get("loader_link", "slowest link on the load path"))
    lim = m.limits.get(key) if key else None
    if lim is None:
        return None, "not reported by this machine" if key else ""
    return float(lim["gbps"]), str(lim["description"])


def bandwidth_rows(m: Measurements) -> list[list[str]]:
    rows = []
    for key, label, limit_key in BANDWIDTH_ROWS:
        b = m.bandwidth.get(key)
        if b is None:
            continue
        limit, what = limit_for(m, limit_key)
        ratio = b["gbps"] / limit if limit else None
        rows.append([label, fmt(b["gbps"]), fmt(limit), fmt(ratio, 2), what or b.get("method", "")])
    return rows


def headline(m: Measurements) -> list[str]:
    """The few numbers worth quoting (README material): link vs limit, cold TTFT per plan, gate cost."""
    h2d = m.bandwidth.get("h2d_pinned", {}).get("gbps")
    limit, _ = limit_for(m, "pcie")
    ratio = f" ({h2d / limit:.2f} of the {limit:.1f} GB/s limit)" if h2d and limit else ""
    ttft = ", ".join(f"{c.plan} {c.ttft_s:.2f} s" for c in m.cold_starts)
    g = m.gate_overhead
    gate = f"{100 * g['overhead']:+.2f} %" if "overhead" in g else "n/a"
    return [
        "## Headline",
        "",
        f"- host-to-device, pinned: {fmt(h2d)} GB/s{ratio}",
        f"- TTFT from cold: {ttft}",
        f"- gate overhead on decode: {gate} (CUDA graphs: {g.get('cuda_graph', False)})",
        "",
    ]


def init_overlap_lines(o: dict) -> list[str]:
    """The saving of init overlapped with the load, measured, next to the simulator's min(init, load)."""
    if not o:
        return []
    return [
        f"## Init overlapped with the load ({o['plan']})",
        "",
        *_table(
            ["TTFT s", "overlapped s", "saved s", "KV + graph s", "weight alloc s", "load to serving s",
             "simulator saves s (profile)", "engine can save s"],
            [[fmt(o["ttft_s"]), fmt(o["ttft_overlapped_s"]), fmt(o["measured_saving_s"]), fmt(o["init_s"]),
              fmt(o["weight_alloc_s"]), fmt(o["load_to_serving_s"]), fmt(o["predicted_saving_s"]),
              fmt(o["predicted_engine_saving_s"])]],
        ),  # fmt: skip
        "The simulator predicts min(init, load): init from the profile includes the weight-buffer "
        "allocation (folded into `kv_cache_alloc_s`), which the engine cannot overlap: the weights "
        "must exist before the loader copies into them.",
        "",
    ]


def sharing_lines(sh: dict) -> list[str]:
    """k engines serving at once (validate/sharing.py): seconds per part and the slots implied."""
    if not sh.get("rows"):
        return []
    lines = [
        f"## Engines side by side (`hardware.compute_slots` = {sh['compute_slots']:.2f})",
        "",
        f"Each engine serves one request of {sh['prompt_tokens']} prompt tokens and {sh['tokens']} tokens out, "
        f"all started together ({sh['plan']} plan, {sh['repeats']} repeats, medians); slots = k x t(1) / t(k), "
        "clamped to [1, k].",
        "",
    ]
    lines += _table(
        ["engines", "prefill s", "decode s/token", "request s", "slots: prefill", "decode", "request"],
        [
            [str(r["engines"]), fmt(r["prefill_s"]), fmt(r["decode_s_per_token"]), fmt(r["request_s"]),
             f"{r['slots_prefill']:.2f}", f"{r['slots_decode']:.2f}", f"{r['slots_request']:.2f}"]
            for r in sh["rows"]
        ],
    )  # fmt: skip
    if sh.get("note"):
        lines += [sh["note"], ""]
    return lines


def render_report(
    m: Measurements, profile_path: str, plots: dict[str, str] | None = None, replay_md: str | None = None
) -> str:
    """The whole report as Markdown; `plots` maps a title to a path relative to the report."""
    plots = plots or {}
    lines = [
        f"# Validation report: {m.model_name} on {m.device.get('name', 'unknown')}",
        "",
        f"- date: {m.date}",
        f"- command: `{m.command}`",
        f"- device: {m.device.get('kind', '?')}, {fmt(m.device.get('memory_gb'))} GB; host DRAM "
        f"{fmt(m.device.get('host_dram_gb'))} GB",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in sorted(m.device.get("versions", {}).items())),
        f"- checkpoint: {m.checkpoint.get('num_layers')} layers, {fmt(m.checkpoint.get('total_bytes', 0) / 1e9)} GB "
        f"({m.checkpoint.get('source', '')})",
        f"- profile: `{profile_path}`",
        "",
        *headline(m),
        "## Links: measured against their physical limits",
        "",
    ]
    lines += _table(["link", "GB/s", "limit GB/s", "ratio", "limit / method"], bandwidth_rows(m))
    e = m.engine
    lines += ["## Cold-start phases (engine)", ""]
    phase_rows = [
        ["process start (interpreter + imports)", fmt(e.get("process_start_s"))],
        ["CUDA context", fmt(e.get("cuda_context_s"))],
        ["weight-buffer allocation", fmt(e.get("weight_alloc_s"))],
        ["KV-cache allocation", fmt(e.get("kv_cache_alloc_s"))],
        ["CUDA-graph capture", fmt(e.get("graph_capture_s"))],
        ["bind per layer", fmt(e.get("bind_s_per_layer"))],
        ["read per layer (mean)", fmt(e.get("read_s_per_layer"))],
        ["copy per layer (mean)", fmt(e.get("copy_s_per_layer"))],
        ["loader efficiency (of the slowest link)", fmt(e.get("loader_efficiency"), 2)],
    ]
    lines += _table(["phase", "seconds"], phase_rows)
    lines += ["## Time to first token from cold, per staging plan", ""]
    part_names = list(dict.fromkeys(p for c in m.cold_starts for p in c.parts))
    rows = []
    for c in m.cold_starts:
        other = c.ttft_s - sum(c.parts.values())
        rows.append(
            [
                c.plan,
                fmt(c.ttft_s),
                str(c.stage_at_first_token),
                str(c.layers_at_first_token),
                fmt(c.full_load_s),
            ]
            + [fmt(c.parts.get(p)) for p in part_names]
            + [fmt(other)]
        )
    lines += _table(
        [
            "plan",
            "TTFT s",
            "stage",
            "layers bound",
            "full load s",
            *[f"{p} s" for p in part_names],
            "other s",
        ],
        rows,
    )
    lines += init_overlap_lines(m.init_overlap)
    lines += ["## Latency tables", ""]
    for kind, tables, unit in (("prefill", m.prefill, "prompt tokens"), ("decode step", m.decode, "batch")):
        xs = sorted({x for t in tables.values() for x in t.x})
        rows = []
        for name, t in tables.items():
            by_x = dict(zip(t.x, t.seconds, strict=False))
            rows.append([name] + [fmt(by_x.get(x)) for x in xs])
        lines += [f"{kind} seconds vs {unit}:", ""]
        lines += _table(["stage", *[f"{x:g}" for x in xs]], rows)
    g = m.gate_overhead
    lines += ["## Gate overhead", ""]
    if g:
        lines += _table(
            ["with gates tok/s", "without gates tok/s", "overhead", "CUDA graphs", "batch"],
            [
                [
                    fmt(g.get("gated_tok_s")),
                    fmt(g.get("plain_tok_s")),
                    f"{100 * g.get('overhead', float('nan')):+.2f} %",
                    str(g.get("cuda_graph", False)),
                    str(g.get("batch", 1)),
                ]
            ],
        )
    sd = m.served_decode
    if sd.get("contexts"):
        how = (
            "captured graph: attends every cache slot"
            if sd.get("cuda_graph")
            else "eager: attends position + 1 slots"
        )
        lines += [f"## The engine's own decode step vs context ({how})", ""]
        rows = [[str(c), fmt(t)] for c, t in zip(sd["contexts"], sd["seconds"], strict=False)]
        lines += _table(["position", "seconds"], rows)
    if m.batching:
        lines += ["## Continuous batching (the engine serving B requests at once)", ""]
        lines += _table(
            ["batch", "decode s/step", "tokens/s", "largest shared step"],
            [
                [
                    str(r["batch"]),
                    fmt(r["decode_s_per_step"]),
                    fmt(r["tokens_per_s"]),
                    str(r["largest_shared_step"]),
                ]
                for r in m.batching
            ],
        )
    lines += sharing_lines(m.sharing)
    lines += ["## CUDA-graph invariance across stages", ""]
    gc = m.graph_check
    if gc.get("skipped"):
        lines += [f"Skipped: {gc['skipped']}", ""]
    else:
        lines += _table(
            ["captures", "nodes before", "nodes after", "replays", "max abs diff vs eager", "invariant"],
            [
                [
                    str(gc.get("captures")),
                    str(gc.get("nodes_before")),
                    str(gc.get("nodes_after")),
                    str(gc.get("replays")),
                    fmt(gc.get("max_abs_diff")),
                    str(gc.get("invariant")),
                ]
            ],
        )
    lines += ["## Quality per stage", ""]
    lines += _table(
        ["stage", "layers", "perplexity", "quality (ppl full / ppl stage)", "token agreement", "source"],
        [
            [
                s.name,
                str(s.num_layers),
                fmt(s.perplexity),
                fmt(s.quality, 3),
                fmt(s.token_agreement, 3),
                s.source,
            ]
            for s in m.stages
        ],
    )
    if replay_md:
        lines += ["## Replay: simulator against the engine", "", replay_md, ""]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{title}]({path})" for title, path in plots.items()] + [""]
    if m.run_seconds:
        lines += ["## Run time of each step", ""]
        lines += _table(["step", "seconds"], [[k, fmt(v)] for k, v in m.run_seconds.items()])
    if m.notes:
        lines += ["## Notes", ""] + [f"- `{k}`: {v}" for k, v in sorted(m.notes.items())] + [""]
    return "\n".join(lines)


def write_report(text: str, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(text)
    return path
