"""The package type-checks under ``mypy --strict``, and its types are precise enough to catch
the mistakes users make (a typo'd option, a wrong literal, an unknown key of a job view)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
PKG = HERE.parent / "ezthrottle"


def mypy(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--hide-error-context",
         "--no-error-summary", *map(str, paths)],
        capture_output=True, text=True, cwd=HERE.parent,
    )  # fmt: skip


def test_package_and_typical_use_are_strict_clean() -> None:
    out = mypy(PKG, HERE / "typing" / "good.py")
    assert out.returncode == 0, out.stdout + out.stderr


def test_misuse_is_reported_on_every_marked_line() -> None:
    bad = HERE / "typing" / "bad.py"
    expected = {
        i for i, line in enumerate(bad.read_text().splitlines(), 1) if "# E:" in line
    }
    out = mypy(bad)
    reported = {
        int(m.group(1)) for m in re.finditer(r"bad\.py:(\d+): error", out.stdout)
    }
    assert expected and expected <= reported, out.stdout
