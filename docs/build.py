"""Regenerate the outputs shown in the guides by running their commands.

A guide marks each command whose output it shows:

    <!-- run: attncost analyze examples/sparse_attention.py --seq-len 16k -->
    ```
    (replaced by "$ <command>" and what it printed)
    ```
    <!-- end -->

and each image it shows with ``<!-- image: attncost plot ... --out FILE -->``.
``python docs/build.py`` runs every command (as ``python -m attncost.cli``,
from the repository root) at two terminal widths, COLUMNS=100 and
COLUMNS=80, and rewrites the blocks; ``--check`` rewrites nothing and exits
1 if any block differs from what its command prints now (images are only
checked to exist).

A block shows the 100-column output; ``<!-- run@80: ... -->`` shows the
80-column one instead.  Either way both are checked: no line is wider than
its width, and the narrower output keeps every word of the wider one whole
(a table may fold its rows, never a site name or a number).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDES = ROOT / "docs" / "guides"
#: The width a block shows unless it says otherwise, and the narrow one every
#: output must also fit.
WIDE, NARROW = 100, 80

RUN_BLOCK = re.compile(r"<!-- run(?:@(?P<width>\d+))?: (?P<command>.+?) -->\n(?P<body>.*?)"
                       r"<!-- end -->", re.DOTALL)
IMAGE = re.compile(r"<!-- image: (?P<command>.+?) -->")
#: Characters a word may end in that a fold may move ("formula" / "formula:").
_PUNCTUATION = ":,;()[]"


#: Runs one command at several widths in one process: the command line is
#: run once per width, and an analysis asked for twice with the same
#: arguments is made once (the output at each width is what a fresh process
#: prints; the trace is the slow part, not the printing).
_AT_WIDTHS = r"""
import contextlib, io, json, os, sys
import attncost, attncost.analysis as analysis
made, first = {}, analysis.analyze
def analyze(model, seq_len, *args, **kwargs):
    key = repr((str(model), seq_len, args,
                sorted((k, repr(v)) for k, v in kwargs.items() if k != "progress")))
    if key not in made:
        made[key] = first(model, seq_len, *args, **kwargs)
    return made[key]
analysis.analyze = attncost.analyze = analyze
from attncost.cli import main
out = {}
for columns in json.loads(sys.argv[1]):
    os.environ["COLUMNS"] = str(columns)
    printed, code = io.StringIO(), 0
    with contextlib.redirect_stdout(printed):
        try:
            main(sys.argv[2:], prog_name="attncost")
        except SystemExit as exc:
            code = exc.code or 0
    out[columns] = [printed.getvalue(), code]
sys.__stdout__.write(json.dumps(out))
"""


def run_command(command: str, columns: int = WIDE) -> str:
    """What ``command`` (an `attncost ...` line) prints at ``columns``, as a guide shows it."""
    return run_at_widths(command, (columns,))[columns]


def run_at_widths(command: str, widths) -> dict[int, str]:
    """What ``command`` prints at each width, from one process."""
    argv = shlex.split(command)
    if argv[0] != "attncost":
        raise SystemExit(f"docs/build.py: only attncost commands can run: {command}")
    env = dict(os.environ, PYTHONHASHSEED="0", TERM="dumb")
    env.pop("FORCE_COLOR", None)
    done = subprocess.run([sys.executable, "-c", _AT_WIDTHS, json.dumps(list(widths)),
                           *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    try:
        printed = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"docs/build.py: `{command}` failed:\n{done.stderr}") from None
    out = {}
    for width, (text, code) in printed.items():
        if code == 2:
            raise SystemExit(f"docs/build.py: `{command}` failed:\n{done.stderr}")
        # Rich pads table lines to the terminal width; the padding is noise in a guide.
        lines = [line.rstrip() for line in text.rstrip("\n").splitlines()]
        if code:
            lines.append(f"(exit status {code})")
        out[int(width)] = "\n".join(lines)
    return out


def _words(text: str) -> set[str]:
    """The words of an output, without rules (────) and the punctuation a fold moves."""
    words = {w.strip(_PUNCTUATION) for w in text.split()}
    return {w for w in words if w and not set(w) <= set("─━═-|│┃")}


def width_problems(command: str, outputs: dict[int, str]) -> list[str]:
    """Lines wider than their width; words of the wide output cut in the narrow one.
    Markdown, JSON and YAML are for files and other tools: their lines do not fold."""
    if any(f"--format {fmt}" in command for fmt in ("markdown", "json", "yaml")):
        return []
    problems = []
    for width, text in outputs.items():
        for line in text.splitlines():
            if len(line) > width:
                problems.append(f"{command}: a line of {len(line)} columns at {width}: "
                                f"{line[:60]}...")
    cut = sorted(w for w in _words(outputs[WIDE]) - _words(outputs[NARROW]) if len(w) <= NARROW)
    if cut:
        problems.append(f"{command}: at {NARROW} columns these are cut: {', '.join(cut[:5])}")
    return problems


def block_for(command: str, output: str, width: int | None = None) -> str:
    marker = f"run@{width}" if width and width != WIDE else "run"
    return f"<!-- {marker}: {command} -->\n```\n$ {command}\n{output}\n```\n<!-- end -->"


def _run_all(commands: list[str], images: list[str], jobs: int) -> dict[str, dict[int, str]]:
    """Every command at both widths (and every image command once)."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        printed = list(pool.map(lambda c: run_at_widths(c, (WIDE, NARROW)), commands))
        list(pool.map(run_command, images))
    return dict(zip(commands, printed))


def build(check: bool, jobs: int) -> int:
    guides = sorted(GUIDES.glob("*.md")) + [ROOT / "README.md"]
    texts = {g: g.read_text(encoding="utf-8") for g in guides}
    commands = list(dict.fromkeys(m.group("command") for text in texts.values()
                                  for m in RUN_BLOCK.finditer(text)))
    images = [] if check else list(dict.fromkeys(m.group("command") for text in texts.values()
                                                 for m in IMAGE.finditer(text)))
    outputs = _run_all(commands, images, jobs)

    def shown(m) -> str:
        width = int(m.group("width") or WIDE)
        return block_for(m.group("command"), outputs[m.group("command")][width], width)

    too_wide = [p for c in commands for p in width_problems(c, outputs[c])]
    stale: list[str] = []
    for guide, text in texts.items():
        new = RUN_BLOCK.sub(shown, text)
        for m in RUN_BLOCK.finditer(text):
            if shown(m) != m.group(0):
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
    if too_wide:  # fixed in attncost's output, not by regenerating
        print(f"{len(too_wide)} output(s) do not fit:\n  " + "\n  ".join(too_wide))
    return 1 if (check and stale) or too_wide else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="Change nothing; exit 1 if a guide's output is stale or does not "
                             f"fit {NARROW} columns.")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2,
                        help="Commands run at once.")
    args = parser.parse_args()
    return build(args.check, max(1, args.jobs))


if __name__ == "__main__":
    sys.exit(main())
