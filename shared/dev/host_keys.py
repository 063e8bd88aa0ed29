"""Function keys on the local host, as Azure enforces them.

A route declared `auth_level=ANONYMOUS` is open; `FUNCTION` needs the function key (or the master
key) in the `x-functions-key` header or the `code` query parameter; `ADMIN` needs the master key.
The keys come from GATEHOUSE_FUNCTION_KEY and GATEHOUSE_MASTER_KEY; when unset, the host generates
them once and keeps them in `<app root>/.gatehouse/host-keys.json` (git-ignored), where the demo,
the CLI or a person can read them, and logs them at start.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

KEY_HEADER = "x-functions-key"
KEY_PARAMETER = "code"
KEYS_FILE = Path(".gatehouse") / "host-keys.json"
ANONYMOUS, FUNCTION, ADMIN = "anonymous", "function", "admin"
KEY_REQUIRED = (f"a function key is required: send it in the {KEY_HEADER} header or the "
                f"'{KEY_PARAMETER}' query parameter")
MASTER_KEY_REQUIRED = (f"the master key is required: send it in the {KEY_HEADER} header or the "
                       f"'{KEY_PARAMETER}' query parameter")


@dataclass(frozen=True)
class HostKeys:
    function: str
    master: str
    origin: str  # where they came from, for the start-up log

    def admits(self, level: str, presented: str | None) -> bool:
        """Whether a request to a route of this auth level may pass with the key it presented."""
        if level == ANONYMOUS:
            return True
        if not presented:
            return False
        accepted = [self.master] if level == ADMIN else [self.function, self.master]
        given = presented.encode("utf-8", "replace")
        # Every key is compared, in constant time, whichever matches.
        matches = [hmac.compare_digest(given, key.encode("utf-8")) for key in accepted]
        return any(matches)

    @staticmethod
    def refusal(level: str) -> str:
        return MASTER_KEY_REQUIRED if level == ADMIN else KEY_REQUIRED


def presented_key(headers: Mapping[str, str], params: Mapping[str, str]) -> str | None:
    """The key a request carries: the header wins over the query parameter."""
    for name, value in headers.items():
        if name.lower() == KEY_HEADER and value.strip():
            return value.strip()
    return params.get(KEY_PARAMETER) or None


def resolve(app_root: Path, function_key: str | None, master_key: str | None) -> HostKeys:
    """The configured keys; whichever is unset comes from the app root's keys file, which is
    written with fresh keys the first time."""
    if function_key and master_key:
        return HostKeys(function_key, master_key, "GATEHOUSE_FUNCTION_KEY/GATEHOUSE_MASTER_KEY")
    path = app_root / KEYS_FILE
    saved = _saved_or_new(path)
    origin = (f"generated, kept in {path}" if not (function_key or master_key)
              else f"GATEHOUSE_*_KEY and {path}")
    return HostKeys(function_key or saved["function"], master_key or saved["master"], origin)


def read_keys(app_root: Path) -> HostKeys | None:
    """The keys a host generated for this app root, if one did."""
    saved = _load(app_root / KEYS_FILE)
    return None if saved is None else HostKeys(saved["function"], saved["master"],
                                               str(app_root / KEYS_FILE))


def _load(path: Path) -> dict[str, str] | None:
    try:
        saved = json.loads(path.read_text())
        return {"function": str(saved["function"]), "master": str(saved["master"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _saved_or_new(path: Path) -> dict[str, str]:
    """The keys in `path`; if there are none, fresh ones written there first. Two hosts starting
    on one app root agree: the file appears whole (a link to a complete temporary file) or not
    at all, and the second host reads the first one's."""
    existing = _load(path)
    if existing is not None:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = {"function": secrets.token_urlsafe(32), "master": secrets.token_urlsafe(32)}
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".host-keys-")
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(fresh, handle)
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    saved = _load(path)
    if saved is None:
        raise RuntimeError(f"{path} holds no host keys; delete it and start the host again")
    return saved
