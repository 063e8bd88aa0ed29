"""`make demo` in its short mode (steps 1-3), as CI runs it so it cannot silently break."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from shared.foundation.storage import PROJECT_ROOT


@pytest.mark.timeout(900)
def test_demo_short_mode_tells_the_first_three_steps_and_stops_its_stack_on_sigterm():
    demo = subprocess.Popen([sys.executable, "-m", "shared.dev.demo"], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "GATEHOUSE_DEMO_SHORT": "1", "KEEP": "1"})
    lines = []
    try:
        for line in demo.stdout:
            lines.append(line)
            if "kill this process) to stop it" in line:
                break
        out = "".join(lines)
        assert "to stop it" in out, out[-5000:]
        pids = [int(pid) for pid in re.findall(r"^  \S+\s+pid (\d+)", out, re.M)]
        assert len(pids) == 5, out[-3000:]
        demo.send_signal(signal.SIGTERM)
        out += demo.stdout.read()
        assert demo.wait(timeout=120) == 143
    finally:
        if demo.poll() is None:
            demo.kill()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # every server the demo started is gone

    assert re.search(r"gates on v1: passed", out)
    assert "v1 is @champion and serves 100% of fraud" in out
    assert re.search(r"gates on v2: passed", out) and "champion now: v2" in out
    refused = re.search(r"gates on v3: failed \(blocking gates not passed: ([^)]*)\)", out)
    assert refused and "ece" in refused.group(1)
    summary = out[out.index("] summary"):]
    assert re.search(r"^  v3\s+over-confident\s+failed\s+\S*ece", summary, re.M)
    # the traffic history: who moved traffic, when and why
    assert re.search(r"^    v2\s+canary\s+v1 95%, v2 5%\s+by gatehouse: canary at 5%", summary,
                     re.M)
    assert re.search(r"^    v2\s+promote\s+v1 0%, v2 100%\s+by gatehouse: "
                     r"(shown no worse|nothing shown worse) at \d+%", summary, re.M)
    assert re.search(r"notifications \(\d+;", summary)
