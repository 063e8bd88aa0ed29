"""What `gatehouse up` started, where: `.gatehouse/state.json` in the working directory.

Every CLI command reads it, so `gatehouse status`, `rollouts` or `poison list` find the storage
(and the app) that `gatehouse up` runs without any environment variable. The file holds the
Azurite ports and pid, the webhook secret and the app's function key; `.gatehouse/` is
git-ignored.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

STATE_DIR = Path(".gatehouse")
STATE_FILE = "state.json"


def state_path(root: Path | None = None) -> Path:
    return (root or Path.cwd()) / STATE_DIR / STATE_FILE


def load(root: Path | None = None) -> dict:
    path = state_path(root)
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def save(state: dict, root: Path | None = None) -> Path:
    """Write the state atomically, readable by its owner only (it holds secrets)."""
    path = state_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_suffix(".tmp")
    draft.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.chmod(draft, 0o600)
    draft.replace(path)
    return path


def update(root: Path | None = None, **fields) -> dict:
    state = {**load(root), **fields}
    save(state, root)
    return state


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def listening(port: int | None) -> bool:
    if not port:
        return False
    try:
        socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def running_azurite(state: dict) -> dict | None:
    """The recorded Azurite when its process lives and every port answers; else None."""
    azurite = state.get("azurite") or {}
    ports = azurite.get("ports") or {}
    if process_alive(azurite.get("pid")) and ports and all(listening(p) for p in ports.values()):
        return azurite
    return None


def storage_connection(root: Path | None = None) -> str | None:
    """The connection string of the Azurite `gatehouse up` recorded, if it still runs."""
    azurite = running_azurite(load(root))
    return azurite.get("connection_string") if azurite else None
