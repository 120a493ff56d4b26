"""The client folder installs alone: a fresh virtualenv, `pip install` of a copy of client/ with
pip's own resolver and index, and nothing of the server comes along. Its dependencies are
downloaded, so this takes tens of seconds; each step has a time limit."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

CLIENT = Path(__file__).resolve().parent.parent
#: What the gateway's server needs and a client must not drag in.
SERVER_ONLY = {"authgateway", "flask", "flask-sqlalchemy", "flask-migrate", "sqlalchemy",
               "psycopg", "psycopg-binary", "cryptography", "waitress", "authlib", "alembic"}
#: Run in the new environment with -I, so neither the working directory nor PYTHONPATH adds
#: anything to what it can import.
PROBE = """
import importlib.metadata, importlib.util, json
import authgateway_client
authgateway_client.GatewayClient("http://127.0.0.1:1").close()
print(json.dumps({
    "installed": [d.metadata["Name"] for d in importlib.metadata.distributions()],
    "client_file": authgateway_client.__file__,
    "client_version": authgateway_client.__version__,
    "server_importable": importlib.util.find_spec("authgateway") is not None,
}))
"""


def run(command: list[str], timeout: float, **options) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **options)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    return done


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_client_installs_alone_with_httpx_and_nothing_of_the_server(tmp_path):
    # A copy of the folder alone: the build may use nothing outside client/.
    source = tmp_path / "client"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns(
        "*.egg-info", "build", "__pycache__", "tests"))
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    run([sys.executable, "-m", "venv", str(venv)], timeout=60, env=env)
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "--quiet", str(source)], timeout=240, env=env,
        cwd=tmp_path)

    probe = json.loads(run([python, "-I", "-c", PROBE], timeout=60, env=env,
                           cwd=tmp_path).stdout)
    installed = {canonical(name) for name in probe["installed"]}
    assert {"authgateway-client", "httpx"} <= installed, installed
    assert not installed & SERVER_ONLY, installed
    assert not probe["server_importable"]
    assert Path(probe["client_file"]).is_relative_to(venv)
    assert probe["client_version"] == _version_in_the_source()


def _version_in_the_source() -> str:
    init = (CLIENT / "authgateway_client" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', init, re.M).group(1)
