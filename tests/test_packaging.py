"""The project installs as a package: `make test` puts the `gatehouse` command in the venv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GATEHOUSE = Path(sys.executable).parent / "gatehouse"
SUBCOMMANDS = ("replay", "poison", "webhooks", "audit", "poll", "rollouts", "gates")


def run_gatehouse(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GATEHOUSE), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_console_script_is_installed_and_lists_its_subcommands(tmp_path):
    assert GATEHOUSE.exists(), f"{GATEHOUSE.name} is not installed next to {sys.executable}"
    result = run_gatehouse("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: gatehouse")
    for subcommand in SUBCOMMANDS:
        assert subcommand in result.stdout


def test_console_script_exits_with_the_commands_exit_code(tmp_path):
    result = run_gatehouse("replay", str(tmp_path / "missing.json"), "--dry-run", cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot replay" in result.stderr
