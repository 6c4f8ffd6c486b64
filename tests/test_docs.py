"""The guides show what the tool prints today: docs/build.py --check reruns
every command in docs/guides/*.md and fails on a stale output."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_guide_outputs_are_current():
    # The corpus table's entries are tests/realcode/'s own tests: not run twice.
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "build.py"), "--check",
                           "--no-corpus"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr
                                  + "\nregenerate with: python docs/build.py")
