"""Fetching the official public trace files into the cache: resumable and verified.

A download goes to `<file>.part`; a rerun resumes it with an HTTP Range request (or
restarts if the server ignores ranges). The finished file is checked against the size
the server announced (and the published size where known) and against a SHA-256 where
one is pinned; the computed digest is written beside the file (`<file>.sha256`) so a
later run, or a colleague, can check theirs. Archives are unpacked where Python can
(tar.xz); the 2021 trace is a RAR archive, which the user must unpack.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from traces.errors import TraceError

CHUNK = 1 << 20
_AZ = "https://azurepublicdatasettraces.blob.core.windows.net"
_GH = "https://raw.githubusercontent.com/Azure/AzurePublicDataset/master/data"
_GHCP = "https://github.com/Azure/AzurePublicDataset/releases/download/ghcp-coding-agent-2026"
# pinned commits: the sizes and digests below are of the files at these commits
_MOONCAKE = ("https://raw.githubusercontent.com/kvcache-ai/Mooncake/3b5a594133958449a1feaf1c9e0fc1b553e34a28/"
             "FAST25-release/traces")
_SERVEGEN_COMMIT = "f891d1189eb32b3868dfc443800c4150548c282a"


@dataclass(frozen=True)
class Remote:
    """One downloadable file; `size`/`sha256` are checked when known."""

    url: str
    filename: str
    size: int | None = None
    sha256: str | None = None
    unpack: str = ""  # "tar" to extract next to the archive
    note: str = ""


REMOTES: dict[str, list[Remote]] = {
    "azure_functions_2019": [Remote(f"{_AZ}/azurepublicdatasetv2/azurefunctions_dataset2019/"
                                    "azurefunctions-dataset2019.tar.xz", "azurefunctions-dataset2019.tar.xz",
                                    unpack="tar", note="14 days of invocations, durations and memory (CC-BY 4.0)")],
    "azure_functions_2021": [Remote("https://github.com/Azure/AzurePublicDataset/raw/master/data/"
                                    "AzureFunctionsInvocationTraceForTwoWeeksJan2021.rar",
                                    "AzureFunctionsInvocationTraceForTwoWeeksJan2021.rar",
                                    note="a RAR archive: unpack it in the same folder (unrar x / 7z x)")],
    "azure_llm_2023": [Remote(f"{_GH}/AzureLLMInferenceTrace_code.csv", "AzureLLMInferenceTrace_code.csv"),
                       Remote(f"{_GH}/AzureLLMInferenceTrace_conv.csv", "AzureLLMInferenceTrace_conv.csv")],
    "azure_llm_2024": [Remote(f"{_AZ}/azurellminfererencetrace/AzureLLMInferenceTrace_code_1week.csv",
                              "AzureLLMInferenceTrace_code_1week.csv"),
                       Remote(f"{_AZ}/azurellminfererencetrace/AzureLLMInferenceTrace_conv_1week.csv",
                              "AzureLLMInferenceTrace_conv_1week.csv")],
    "burstgpt": [Remote("https://github.com/HPMLL/BurstGPT/releases/download/v1.1/BurstGPT_1.csv", "BurstGPT_1.csv",
                        size=52_283_111, note="size from the repository's Git LFS pointer")],
    "azure_lmm_2025": [Remote(f"{_GH}/AzureLMMInferenceTrace_multimodal.csv.gz",
                              "AzureLMMInferenceTrace_multimodal.csv.gz",
                              note="read as it is (gzip); the reader has not met the full file yet")],
    "ghcp_coding_agent_2026": [Remote(f"{_GHCP}/date.2026-06-0{d}.tar.gz", f"date.2026-06-0{d}.tar.gz", unpack="tar",
                                      note="one day of sessions (about 119-593 MB); unpacks to date=2026-06-0"
                                           f"{d}/shard-NNNN.jsonl.gz")
                               for d in range(1, 8)],
    "mooncake_conversation": [Remote(f"{_MOONCAKE}/conversation_trace.jsonl", "conversation_trace.jsonl",
                                     size=3_029_533,
                                     sha256="b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df")],
    "mooncake_toolagent": [Remote(f"{_MOONCAKE}/toolagent_trace.jsonl", "toolagent_trace.jsonl",
                                  note="the reader has not met this file yet (its documented format is the "
                                       "conversation trace's)")],
    "mooncake_synthetic": [Remote(f"{_MOONCAKE}/synthetic_trace.jsonl", "synthetic_trace.jsonl", size=1_136_313,
                                  sha256="bd070915a98fc0ed264d7cfef2ce746002eb3076a695ec31ba2674c0111ec131")],
    "servegen": [Remote(f"https://github.com/alibaba/ServeGen/archive/{_SERVEGEN_COMMIT}.tar.gz",
                        f"ServeGen-{_SERVEGEN_COMMIT[:12]}.tar.gz", unpack="tar",
                        note="the repository at a pinned commit; its data/ folders are what the reader replays")],
}
REMOTES["mooncake"] = REMOTES["mooncake_conversation"] + REMOTES["mooncake_toolagent"]
ALIASES = {"azure_functions": "azure_functions_2019", "azure_llm_code": "azure_llm_2023",
           "azure_llm_conv": "azure_llm_2023", "azure_llm_2024_code": "azure_llm_2024",
           "azure_llm_2024_conv": "azure_llm_2024"}


def remotes_for(name: str) -> list[Remote]:
    """The files that make up trace `name`."""
    key = ALIASES.get(name, name)
    if key not in REMOTES:
        raise TraceError(f"nothing to download for {name!r}; downloadable: {', '.join(sorted(REMOTES))}")
    return REMOTES[key]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _progress(total: int | None, done: int, name: str, show: bool):
    if not show:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=name, file=sys.stderr)


def fetch(remote: Remote, folder: Path, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download `remote` into `folder` (resuming a `.part`), verify it, return the file."""
    folder.mkdir(parents=True, exist_ok=True)
    dest, part = folder / remote.filename, folder / (remote.filename + ".part")
    if dest.exists():
        _verify(dest, remote, dest.stat().st_size)
        return dest
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(remote.url, headers={"User-Agent": "progressive-serve-traces"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            if have and resp.status != 206:
                have = 0  # the server ignored the range: start over
            total = _total(resp, have)
            bar = _progress(total, have, remote.filename, progress)
            with open(part, "ab" if have else "wb") as out:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    out.write(block)
                    if bar is not None:
                        bar.update(len(block))
            if bar is not None:
                bar.close()
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # range beyond the end: the part is complete
            total = have
        else:
            raise TraceError(f"download {remote.url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise TraceError(f"download {remote.url} stopped after {part.stat().st_size if part.exists() else 0} "
                         f"bytes: {getattr(exc, 'reason', exc)}; run the command again to resume") from None
    got = part.stat().st_size
    if total is not None and got != total:
        raise TraceError(f"download {remote.url}: got {got} of {total} bytes; run the command again to resume")
    _verify(part, remote, got)
    os.replace(part, dest)
    return dest


def _total(resp, have: int) -> int | None:
    """Full size of the file from Content-Range (206) or Content-Length (200)."""
    rng = resp.headers.get("Content-Range")
    if rng and "/" in rng and not rng.endswith("/*"):
        return int(rng.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return int(length) + have if length is not None else None


def _verify(path: Path, remote: Remote, size: int) -> None:
    """Check size and digest; a mismatching download is removed so a rerun starts clean."""
    problem = ""
    if remote.size is not None and size != remote.size:
        problem = f"size {size} bytes, expected {remote.size}"
    digest = sha256_of(path)
    if not problem and remote.sha256 and digest != remote.sha256:
        problem = f"sha256 {digest}, expected {remote.sha256}"
    if problem:
        path.unlink()
        raise TraceError(f"{path}: {problem}; the file was removed, run the command again")
    (path.parent / (remote.filename + ".sha256")).write_text(f"{digest}  {remote.filename}\n")


def unpack(archive: Path, remote: Remote) -> list[Path]:
    """Extract a tar archive next to itself (once); return the extracted files."""
    if remote.unpack != "tar":
        return []
    marker = archive.parent / (archive.name + ".unpacked")
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            if not marker.exists():
                tar.extractall(archive.parent, members=members, filter="data")
                marker.write_text("\n".join(m.name for m in members))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise TraceError(f"{archive}: cannot unpack: {exc}") from None
    return [archive.parent / m.name for m in members]


def download(name: str, folder: Path, *, progress: bool = True) -> list[Path]:
    """Fetch (and unpack) every file of trace `name` into `folder`."""
    out = []
    for remote in remotes_for(name):
        path = fetch(remote, folder, progress=progress)
        out.append(path)
        out.extend(unpack(path, remote))
    return out
