"""The mirror test's servers on 127.0.0.1: olah serving the fixture repositories (serve.py) and a
plain file server standing in for the one file read from outside the hub (MKQA's release on
GitHub). Clients reach them as a site's users do: HF_ENDPOINT for the hub, LANGPRUNE_URL_MIRROR
for the GitHub file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from helpers.workflow import with_changes
from mirror import hubfixtures

SERVE = Path(__file__).with_name("serve.py")
GUARD = Path(__file__).with_name("guard")
MKQA_URL_PREFIX = "https://github.com/apple/ml-mkqa/raw/main/dataset/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refuses(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:port any more."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


class Mirror:
    """Fixture repositories under ``root`` served by olah, plus MKQA's file; ``stop()`` ends both."""

    def __init__(self, root: Path):
        self.root = root
        self.commits = hubfixtures.build_all(root / "repos")
        hubfixtures.mkqa_release(root / "files" / hubfixtures.MKQA_FILE)
        self.port, self.files_port = free_port(), free_port()
        self.processes: list[subprocess.Popen] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Mirror:
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        self.processes.append(subprocess.Popen(
            [sys.executable, str(SERVE), str(self.root / "repos"), str(self.port), str(self.root / "olah"),
             *hubfixtures.GATED], stdout=open(logs / "olah.log", "w"), stderr=subprocess.STDOUT))
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.files_port), "--bind", "127.0.0.1",
             "--directory", str(self.root / "files")], stdout=open(logs / "files.log", "w"),
            stderr=subprocess.STDOUT))
        probe = f"{self.endpoint}/api/models/{hubfixtures.AYA23}/revision/main"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(probe, timeout=5) as response:
                    if response.status == 200:
                        return self
            except OSError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                    self.stop()
                    raise RuntimeError(f"olah did not start:\n{(logs / 'olah.log').read_text()[-3000:]}")
                time.sleep(0.5)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()

    def commit(self, repo_type: str, repo: str) -> str:
        return self.commits[f"{repo_type}s/{repo}"]

    def client_env(self, hf_home: Path, token: bool = True, **extra: str) -> dict:
        """A user's environment on a site with this mirror (a token only where ``token``)."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN", "HF_HUB_CACHE", "HF_DATASETS_CACHE")}
        env.update(HF_HOME=str(hf_home), HF_ENDPOINT=self.endpoint, TOKENIZERS_PARALLELISM="false",
                   HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   LANGPRUNE_URL_MIRROR=f"{MKQA_URL_PREFIX}=http://127.0.0.1:{self.files_port}/")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        if token:
            env["HF_TOKEN"] = "hf_fixture_token"
        env.update(extra)
        return env


def offline_env(env: dict, guard_log: Path) -> dict:
    """``env`` for the compute side: the network guard on every Python process; the rules set offline."""
    guarded = dict(env, LANGPRUNE_NET_GUARD_LOG=str(guard_log))
    guarded["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GUARD), env.get("PYTHONPATH")]))
    return guarded


REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "config" / "paper.yaml"
OVERLAY = Path(__file__).with_name("paper_overlay.yaml")


def paper_config(path: Path, **changes) -> Path:
    """config/paper.yaml with the test's size overlay (and ``changes``, dotted keys) written to ``path``."""
    import yaml  # noqa: PLC0415

    overlay = {**yaml.safe_load(OVERLAY.read_text()), **changes}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(with_changes(yaml.safe_load(PAPER.read_text()), **overlay), sort_keys=False))
    return path
