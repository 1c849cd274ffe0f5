"""The README's quick start runs as written, in a fresh interpreter, against the test server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import Server, Target

README = Path(__file__).parent.parent / "README.md"


def quick_start_code() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "no python block in the quick start"
    return "\n".join(blocks)


def test_quick_start_runs(server: Server, target: Target) -> None:
    url = target.unique()
    env = {
        **os.environ,
        "EZTHROTTLE_URL": server.url,
        "EZTHROTTLE_API_KEY": server.key,
        "TARGET_URL": url,
    }
    out = subprocess.run(
        [sys.executable, "-c", quick_start_code()], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("200 {") and lines[1] == "succeeded [200]", out.stdout
    # Both calls really went through the server to the target.
    assert [s.method for s in target.requests(url)] == ["POST", "POST"]
