"""A real MLflow tracking server for tests: ``mlflow server`` on 127.0.0.1, all its files in one folder.

The server is the venv's own ``mlflow`` (next to the running Python), listens on
a free port of 127.0.0.1, keeps its runs in ``<root>/mlflow.db`` (sqlite) and
the artifacts it proxies in ``<root>/artifacts``, so nothing lands in the
repository or the home directory. It runs in its own session and is stopped by
that process group's id (the server forks workers), never by name.

    with mlflow_server(tmp_path / "mlflow") as server:
        MlflowClient(server.uri).search_experiments()
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from torchtune_config_writer.execute.runner import kill_group

#: Seconds to wait for /health; the first start migrates a new sqlite database (several seconds on a busy machine).
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class MlflowServer:
    """A started server: its tracking URI, its store, its log."""

    uri: str
    """``http://127.0.0.1:<port>``."""
    backend_store_uri: str
    artifacts: Path
    log: Path
    pid: int


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_binary() -> Path:
    """The ``mlflow`` script of this interpreter's environment (not whichever is first on PATH)."""
    return Path(sys.executable).parent / "mlflow"


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it forks workers), SIGKILL it if it lingers."""
    kill_group(proc, grace_s=15)


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[MlflowServer]:
    """Start ``mlflow server`` with its store under ``root``; yield it once /health answers; stop it.

    Raises RuntimeError with the server's log when it exits or does not answer in time.
    """
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    store = f"sqlite:///{root / 'mlflow.db'}"
    artifacts = root / "artifacts"
    log_path = root / "server.log"
    cmd = [str(mlflow_binary()), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", store, "--artifacts-destination", str(artifacts)]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(log_path, "w") as log:
        # cwd = root: whatever the server writes relative to its cwd stays in the temp folder
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = MlflowServer(f"http://127.0.0.1:{port}", store, artifacts, log_path, proc.pid)
    try:
        _wait_healthy(server, proc)
        yield server
    finally:
        _stop(proc)


def _wait_healthy(server: MlflowServer, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{server.log.read_text()[-4000:]}")
        if _healthy(server.uri):
            return
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer {server.uri}/health within {START_TIMEOUT_S:.0f} s:\n"
                       f"{server.log.read_text()[-4000:]}")
