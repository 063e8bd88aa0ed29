"""`make demo` in its short mode (steps 1-3), as CI runs it so it cannot silently break."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from shared.storage import PROJECT_ROOT


@pytest.mark.timeout(900)
def test_demo_short_mode_tells_the_first_three_steps():
    result = subprocess.run([sys.executable, "-m", "shared.demo"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=880,
                            env={**os.environ, "GATEHOUSE_DEMO_SHORT": "1"})
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert re.search(r"gates on v1: passed", out)
    assert "v1 is @champion and serves 100% of fraud" in out
    assert re.search(r"gates on v2: passed", out) and "champion now: v2" in out
    assert re.search(r"v2: 5%.*v2: 50%", out, re.S) or "canary at 5%" in out
    refused = re.search(r"gates on v3: failed \(blocking gates not passed: ([^)]*)\)", out)
    assert refused and "ece" in refused.group(1)
    assert re.search(r"notifications \(\d+\)", out)
