"""Regenerate the outputs shown in the guides by running their commands.

A guide marks each command whose output it shows:

    <!-- run: attncost analyze examples/sparse_attention.py --seq-len 16k -->
    ```
    (replaced by "$ <command>" and what it printed)
    ```
    <!-- end -->

and each image it shows with ``<!-- image: attncost plot ... --out FILE -->``.
``python docs/build.py`` runs every command (as ``python -m attncost.cli``,
from the repository root, COLUMNS=100) and rewrites the blocks; ``--check``
rewrites nothing and exits 1 if any block differs from what its command
prints now (images are only checked to exist).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDES = ROOT / "docs" / "guides"
COLUMNS = "100"

RUN_BLOCK = re.compile(r"<!-- run: (?P<command>.+?) -->\n(?P<body>.*?)<!-- end -->", re.DOTALL)
IMAGE = re.compile(r"<!-- image: (?P<command>.+?) -->")


def run_command(command: str) -> str:
    """What ``command`` (an `attncost ...` line) prints, as a guide shows it."""
    argv = shlex.split(command)
    if argv[0] != "attncost":
        raise SystemExit(f"docs/build.py: only attncost commands can run: {command}")
    env = dict(os.environ, COLUMNS=COLUMNS, PYTHONHASHSEED="0", TERM="dumb")
    env.pop("FORCE_COLOR", None)
    done = subprocess.run([sys.executable, "-m", "attncost.cli", *argv[1:]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode == 2:
        raise SystemExit(f"docs/build.py: `{command}` failed:\n{done.stderr}")
    # Rich pads table lines to the terminal width; the padding is noise in a guide.
    lines = [line.rstrip() for line in done.stdout.rstrip("\n").splitlines()]
    if done.returncode:
        lines.append(f"(exit status {done.returncode})")
    return "\n".join(lines)


def block_for(command: str, output: str) -> str:
    return f"<!-- run: {command} -->\n```\n$ {command}\n{output}\n```\n<!-- end -->"


def build(check: bool, jobs: int) -> int:
    guides = sorted(GUIDES.glob("*.md")) + [ROOT / "README.md"]
    texts = {g: g.read_text(encoding="utf-8") for g in guides}
    commands = list(dict.fromkeys(m.group("command") for text in texts.values()
                                  for m in RUN_BLOCK.finditer(text)))
    images = [] if check else list(dict.fromkeys(m.group("command") for text in texts.values()
                                                 for m in IMAGE.finditer(text)))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outputs = dict(zip(commands, pool.map(run_command, commands)))
        list(pool.map(run_command, images))

    stale = []
    for guide, text in texts.items():
        new = RUN_BLOCK.sub(lambda m: block_for(m.group("command"), outputs[m.group("command")]),
                            text)
        for m in RUN_BLOCK.finditer(text):
            if block_for(m.group("command"), outputs[m.group("command")]) != m.group(0):
                stale.append(f"{guide.relative_to(ROOT)}: {m.group('command')}")
        for m in IMAGE.finditer(text):
            out = shlex.split(m.group("command"))
            target = out[out.index("--out") + 1] if "--out" in out else None
            if target is None or not (ROOT / target).exists():
                stale.append(f"{guide.relative_to(ROOT)}: no image from {m.group('command')}")
        if not check and new != text:
            guide.write_text(new, encoding="utf-8")
    if stale:
        verb = "stale (run python docs/build.py)" if check else "updated"
        print(f"{len(stale)} output(s) {verb}:\n  " + "\n  ".join(stale))
    return 1 if (check and stale) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="Change nothing; exit 1 if a guide's output is stale.")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2,
                        help="Commands run at once.")
    args = parser.parse_args()
    return build(args.check, max(1, args.jobs))


if __name__ == "__main__":
    sys.exit(main())
