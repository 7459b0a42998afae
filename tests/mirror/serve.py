"""Run olah, the self-hosted Hugging Face mirror, on 127.0.0.1 serving local repositories only.

    python tests/mirror/serve.py ROOT PORT STATE_DIR [GATED_REPO ...]

ROOT holds ``models/<org>/<name>`` and ``datasets/<org>/<name>`` git repositories (hubfixtures.py
builds them). olah runs with ``offline = true``: it never contacts huggingface.co and answers
only from ROOT. olah serves every local repository ungated, so the hub's gating of the listed
repositories is reproduced in front of it: a file download (``/resolve/``) without an
``Authorization`` header gets the hub's answer for a gated repository (401, ``X-Error-Code:
GatedRepo``); with any token it passes. Metadata stays readable, as on the hub.
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_config(root: Path, port: int, state: Path) -> Path:
    config = state / "olah.toml"
    config.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\n'
        f'repos-path = "{state / "repos"}"\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        f'mirrors-path = ["{root}"]\n'
        "[accessibility]\noffline = true\n")
    return config


class Gate:
    """ASGI middleware: the hub's 401 for file downloads of gated repositories without a token."""

    def __init__(self, app, gated: list[str]):
        self.app, self.gated = app, gated

    def _gated(self, scope) -> str | None:
        path = scope.get("path", "")
        if "/resolve/" not in path or any(k == b"authorization" for k, _ in scope.get("headers", [])):
            return None
        return next((repo for repo in self.gated if f"/{repo}/resolve/" in path), None)

    async def __call__(self, scope, receive, send):
        repo = self._gated(scope) if scope["type"] == "http" else None
        if repo is None:
            await self.app(scope, receive, send)
            return
        message = f"Access to model {repo} is restricted. You must have access to it and be authenticated."
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"x-error-code", b"GatedRepo"), (b"x-error-message", message.encode()),
                                (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"error": "gated"}'})


def main(argv: list[str]) -> None:
    import uvicorn
    from olah import server

    root, port, state, gated = Path(argv[0]).resolve(), int(argv[1]), Path(argv[2]).resolve(), argv[3:]
    state.mkdir(parents=True, exist_ok=True)
    sys.argv = ["olah-cli", "--config", str(write_config(root, port, state)), "--log-path", str(state / "logs")]
    server.init()
    uvicorn.run(Gate(server.app, gated), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1:])
