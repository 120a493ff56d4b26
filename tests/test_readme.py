"""The README's first hour, as a new user lives it: a fresh clone of this repository,
`make run` there (which builds its own .venv from the package index), then every bash block
marked ``<!-- readme-test -->`` run as written, in one shell in the clone, with only the port
changed. A clone carries committed files only: this tests the last commit.

Google's settings are the placeholder values of a user who followed "With Google": nothing
here talks to Google (starting a flow only builds the URL the person would open).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.oidc_gateway import require

ROOT = Path(__file__).resolve().parent.parent
MARK = "<!-- readme-test -->"
BLOCK = re.compile(re.escape(MARK) + r"\s*```bash\n(.*?)```", re.DOTALL)
START_SECONDS = 300  # a fresh .venv from the package index: about a minute with pip's cache

#: What each marked block answers, in the README's order.
EXPECTED = [
    ['"status":"healthy"', '"encryption":"operational"'],
    ["configured", "agw_", "my-mcp-server"],
    ['"auth_url":"https://accounts.google.com/', '"status":"pending"',
     '"error":"not_authenticated"'],
    ["AUTH_GATEWAY_ROTATION_KEYS=", "Re-encrypted 0 credentials"],
]


def marked_blocks() -> list[str]:
    return BLOCK.findall((ROOT / "README.md").read_text())


def test_the_readme_marks_the_blocks_this_test_runs():
    blocks = marked_blocks()
    assert len(blocks) == len(EXPECTED)
    assert "curl -s http://127.0.0.1:8000/health" in blocks[0]
    assert "SESSION_ID=$(" in blocks[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_environment(port: int) -> dict[str, str]:
    """This shell's environment without the gateway's settings, plus a port and Google's."""
    from authgateway.config import PREFIX, SEED_NAMES

    env = {name: value for name, value in os.environ.items()
           if not name.startswith(PREFIX) and name not in SEED_NAMES
           and name not in ("VIRTUAL_ENV", "VENV", "PYTHONPATH", "FLASK_APP", "MAKEFLAGS")}
    env.update(PORT=str(port), GOOGLE_CLIENT_ID="readme-test.apps.googleusercontent.com",
               GOOGLE_CLIENT_SECRET="readme-test-secret",
               GOOGLE_REDIRECT_URI=f"http://127.0.0.1:{port}/auth/callback/google")
    return env


class MakeRun:
    """`make run` in the clone, in its own process group, its output in a file."""

    def __init__(self, clone: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, url: str) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"make run exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"no answer from {url} within {START_SECONDS} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, port: int) -> None:
        """Ctrl-C's end: the whole group, and back only once the port is free again (make
        exits before the gateway has finished writing its last audit counts)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                    return
                except OSError:
                    time.sleep(0.2)


def api_key(output: str) -> str:
    match = re.search(r"Your API key:\s*(agw_\S+)", output)
    assert match, output
    return match.group(1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    missing = [tool for tool in ("git", "make", "curl") if shutil.which(tool) is None]
    require(f"needs {', '.join(missing)} on PATH" if missing else None)
    work = tmp_path_factory.mktemp("readme")
    clone = work / "authgateway"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    port = free_port()
    env = user_environment(port)
    first = MakeRun(clone, env, work / "make-run-1.log")
    try:
        first.wait_healthy(f"http://127.0.0.1:{port}/health")
    finally:
        first.stop(port)
    # The second run installs nothing again and still shows the key.
    second = MakeRun(clone, env, work / "make-run-2.log")
    try:
        second.wait_healthy(f"http://127.0.0.1:{port}/health")
        yield clone, port, env, first.output(), second.output()
    finally:
        second.stop(port)


def test_make_run_shows_the_api_key_every_time_and_installs_once(served):
    _clone, _port, _env, first, second = served
    assert "DEVELOPMENT KEYS were generated into instance/dev.env" in first
    assert "DEVELOPMENT KEYS are in instance/dev.env" in second
    assert api_key(first) == api_key(second)
    assert "pip install" in first and "pip install" not in second
    for output in (first, second):
        assert "Traceback" not in output
        # pip shows what the build backend warns about; setuptools warned about the
        # templates and static folders while they were not declared as packages.
        assert "BuildBackendWarning" not in output and "setuptools" not in output, output


def test_the_readme_blocks_run_as_written(served):
    clone, port, env, _first, _second = served
    script = ["set -euo pipefail"]
    for number, block in enumerate(marked_blocks()):
        script += [f"echo '=== block {number}'", block.replace("127.0.0.1:8000",
                                                              f"127.0.0.1:{port}")]
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    answers = re.split(r"^=== block \d+\n", done.stdout, flags=re.MULTILINE)[1:]
    assert len(answers) == len(EXPECTED)
    for number, (answer, expected) in enumerate(zip(answers, EXPECTED, strict=True)):
        for text in expected:
            assert text in answer, f"block {number}: {text!r} not in\n{answer}"
    # Every command said where its settings came from, and no new key was suggested.
    assert "Using the development settings in instance/dev.env." in done.stderr
    assert "keys generate" not in done.stderr
