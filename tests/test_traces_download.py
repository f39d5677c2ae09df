"""The downloader against a local HTTP server: resumes, verifies size and checksum."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from traces import TraceError
from traces.download import Remote, fetch, remotes_for, unpack

PAYLOAD = bytes(range(256)) * 4000  # 1,024,000 bytes
REPO = Path(__file__).resolve().parents[1]


class _Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD with Range support; `cut` ends the first full response early."""

    state: dict = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.state["requests"].append(self.headers.get("Range"))
        if self.path.endswith("/missing"):
            self.send_error(404)
            return
        start = 0
        ranged = self.headers.get("Range") if self.state["ranges"] else None
        if ranged:
            start = int(ranged.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.state["cut"] and not ranged:
            self.state["cut"] = False
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    _Handler.state = {"requests": [], "cut": False, "ranges": True}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.state
    httpd.shutdown()


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_fetch_verifies_and_records_digest(server, tmp_path):
    url, _ = server
    path = fetch(Remote(f"{url}/f.bin", "f.bin", len(PAYLOAD), SHA), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert (tmp_path / "f.bin.sha256").read_text().split()[0] == SHA
    assert fetch(Remote(f"{url}/f.bin", "f.bin", len(PAYLOAD), SHA), tmp_path, progress=False) == path


def test_interrupted_download_resumes_with_range(server, tmp_path):
    url, state = server
    state["cut"] = True
    remote = Remote(f"{url}/f.bin", "f.bin", None, SHA)
    with pytest.raises(TraceError, match="run the command again to resume"):
        fetch(remote, tmp_path, progress=False)
    have = (tmp_path / "f.bin.part").stat().st_size
    assert 0 < have < len(PAYLOAD)
    assert fetch(remote, tmp_path, progress=False).read_bytes() == PAYLOAD
    assert state["requests"][-1] == f"bytes={have}-"


def test_server_without_ranges_restarts(server, tmp_path):
    url, state = server
    state["ranges"] = False
    (tmp_path / "f.bin.part").write_bytes(b"junk")
    assert fetch(Remote(f"{url}/f.bin", "f.bin", None, SHA), tmp_path, progress=False).read_bytes() == PAYLOAD


def test_checksum_and_size_mismatch_remove_the_file(server, tmp_path):
    url, _ = server
    with pytest.raises(TraceError, match="sha256 .* expected 00"):
        fetch(Remote(f"{url}/f.bin", "f.bin", None, "00" * 32), tmp_path, progress=False)
    assert not (tmp_path / "f.bin.part").exists() and not (tmp_path / "f.bin").exists()
    with pytest.raises(TraceError, match="size 1024000 bytes, expected 5"):
        fetch(Remote(f"{url}/f.bin", "f.bin", 5), tmp_path, progress=False)


def test_http_error_and_unknown_name(server, tmp_path):
    url, _ = server
    with pytest.raises(TraceError, match="HTTP 404"):
        fetch(Remote(f"{url}/missing", "m.bin"), tmp_path, progress=False)
    with pytest.raises(TraceError, match="downloadable: .*burstgpt"):
        remotes_for("nope")
    assert remotes_for("azure_functions")[0].unpack == "tar"


def test_unpack_tar(tmp_path):
    import tarfile
    inner = tmp_path / "src" / "invocations_per_function_md.anon.d01.csv"
    inner.parent.mkdir()
    inner.write_text("x\n")
    archive = tmp_path / "a.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(inner, arcname=inner.name)
    out = unpack(archive, Remote("u", "a.tar.xz", unpack="tar"))
    assert [p.read_text() for p in out] == ["x\n"]


def test_cli_download_with_url(server, tmp_path):
    url, _ = server
    cmd = [sys.executable, "-m", "traces", "download", "custom", "--url", f"{url}/f.bin", "--dest", str(tmp_path),
           "--sha256", SHA, "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "f.bin")
    from traces.cli import main
    assert main(cmd[3:-3] + ["--sha256", "ab" * 32, "--no-progress"]) == 2
    assert not (tmp_path / "f.bin").exists()
