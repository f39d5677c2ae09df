"""Command line: `python -m traces {info,download,calibrate,names}`.

Errors are one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from traces.errors import TraceError
from traces.options import split_kv


def _add_trace_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace-dir", help="folder to search first for named traces")
    p.add_argument("--duration", type=float, help="cut the trace at this many seconds")
    p.add_argument("--seed", type=int, default=0, help="seed for every random choice (default 0)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a trace option, e.g. -o select=top -o functions=4 -o catalog_size=300 "
                        "(`names` lists every option of every trace)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m traces", description=(
        "Serverless and LLM arrival traces for progressive-serve: inspect, download, calibrate."))
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print what a trace holds (functions, invocations, span, rates, burstiness)",
                          description="Print statistics of a trace given by NAME or PATH.")
    info.add_argument("trace", help="a trace name (see `names`) or a trace file/folder")
    info.add_argument("--json", action="store_true", help="print JSON instead of aligned text")
    _add_trace_args(info)

    dl = sub.add_parser("download", help="fetch the official public files into the cache (resumable, verified)",
                        description="Download a trace's public files; rerun to resume an interrupted download.")
    dl.add_argument("name", help="trace name, e.g. azure_functions, azure_llm_2023, burstgpt")
    dl.add_argument("--dest", type=Path, help="target folder (default: the user cache dir)")
    dl.add_argument("--url", help="fetch this URL instead of the official one (mirrors, tests)")
    dl.add_argument("--sha256", help="expected SHA-256 of the file fetched with --url")
    dl.add_argument("--size", type=int, help="expected size in bytes of the file fetched with --url")
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")

    cal = sub.add_parser("calibrate", help="measure the synthetic generator's statistics from real files",
                         description="Write the calibration JSON; numbers the files cannot give come from "
                                     "ATC'20 figures, and each says which.")
    cal.add_argument("--trace-dir", help="folder to search first for the trace files")
    cal.add_argument("--out", type=Path, default=Path(__file__).parent / "calibration" / "azure_functions_2019.json",
                     help="where to write the JSON (default: the committed one)")
    cal.add_argument("--min-functions", type=int, default=1000,
                     help="fewest functions (and 100x that invocations) to trust a measurement over the paper")

    sub.add_parser("names", help="list the trace names and their options")
    return parser


def cmd_info(args) -> int:
    from traces.info import functions_2019_info, render, table_info, trace_info
    from traces.registry import open_trace, resolve
    options = split_kv(args.option)
    fmt, files, _ = resolve(args.trace, args.trace_dir)
    if fmt == "azure_functions_2019" and not options and args.duration is None:
        info = functions_2019_info([f for f, _ in files])
        info["files"] = ";".join(str(f) for f, _ in files)
    elif fmt in ("azure_functions_2019_durations", "azure_functions_2019_memory"):
        info = table_info(fmt, [f for f, _ in files], lenient=options.get("lenient", "") in ("1", "true"))
    else:
        if fmt.startswith("azure_functions"):
            options.setdefault("select", "all")  # show every function, not the simulator's default pick
        elif fmt != "synthetic":
            options.setdefault("failures", "keep")  # count every row of the file
        trace = open_trace(args.trace, trace_dir=args.trace_dir, duration_s=args.duration, seed=args.seed,
                           **options)
        info = trace_info(trace)
    print(json.dumps(info, indent=1, default=str) if args.json else render(info))
    return 0


def cmd_download(args) -> int:
    from traces.download import Remote, download, fetch, remotes_for
    from traces.locate import cache_dir
    folder = args.dest or cache_dir() / args.name
    if args.url:
        name = args.url.rstrip("/").rsplit("/", 1)[-1] or args.name
        paths = [fetch(Remote(args.url, name, args.size, args.sha256), folder, progress=not args.no_progress)]
    else:
        for r in remotes_for(args.name):
            if r.note:
                print(f"{r.filename}: {r.note}", file=sys.stderr)
        paths = download(args.name, folder, progress=not args.no_progress)
    for p in paths:
        print(p)
    return 0


def cmd_calibrate(args) -> int:
    from traces.calibrate import calibration, write_calibration
    from traces.locate import find
    inv, _ = find("azure_functions_2019", args.trace_dir)
    if not inv:
        raise TraceError("calibrate: no invocations_per_function_md.anon.dNN.csv found; pass --trace-dir")
    folder = inv[0].parent
    dur = sorted(folder.glob("function_durations_percentiles.anon.d[0-9][0-9].csv*"))
    mem = sorted(folder.glob("app_memory_percentiles.anon.d[0-9][0-9].csv*"))
    conv, _ = find("azure_llm_2023_conv", args.trace_dir)
    code, _ = find("azure_llm_2023_code", args.trace_dir)
    cal = calibration(inv, dur, mem, conv[0] if conv else None, code[0] if code else None,
                      min_functions=args.min_functions, min_invocations=100 * args.min_functions)
    if args.out.exists():  # keep token tables that this run had no LLM trace to measure
        try:
            previous = json.loads(args.out.read_text()).get("tokens", {})
        except ValueError:
            previous = {}
        for kind, table in previous.items():
            cal["tokens"].setdefault(kind, table)
    write_calibration(cal, args.out)
    print(f"wrote {args.out} from {len(inv)} invocation, {len(dur)} duration, {len(mem)} memory files"
          f"{', conv' if conv else ''}{', code' if code else ''}")
    return 0


def cmd_names(args) -> int:
    from traces.catalog import CatalogOptions
    from traces.functions2019 import Azure2019Options
    from traces.functions2021 import Azure2021Options
    from traces.options import describe
    from traces.registry import NAMES
    from traces.requests_trace import RequestsOptions
    from traces.rowtrace import RowOptions
    from traces.servegen import ServeGenOptions
    print("names: " + ", ".join(NAMES))
    for title, cls in (("azure_functions_2019", Azure2019Options), ("azure_functions_2021", Azure2021Options),
                       ("azure_llm_* / burstgpt / requests CSV", RequestsOptions), ("synthetic", CatalogOptions),
                       ("servegen", ServeGenOptions), ("mooncake* / azure_lmm_2025 / ghcp_coding_agent_2026", RowOptions)):
        print(f"\noptions of {title}:")
        for name, default, help_ in describe(cls):
            print(f"  {name} = {default}\n      {help_}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"info": cmd_info, "download": cmd_download, "calibrate": cmd_calibrate, "names": cmd_names}
    try:
        return commands[args.command](args)
    except TraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
