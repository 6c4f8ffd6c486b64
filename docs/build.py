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

A ``<!-- corpus -->`` ... ``<!-- end -->`` block is the table of the
recognition corpus: every entry of tests/realcode/test_published.py and
tests/realcode/test_configs.py, its truth (from the test module, where it
is written once) beside what attncost says, and the verdict of each of the
entry's tests, run here as plain functions.  Its Markdown lines may be as
wide as they need.  Where a package of the corpus is not installed the
block is left as it is, rebuilt and checked by neither mode, and the build
says so; ``--no-corpus`` leaves it as it is too (the test suite's check:
tests/realcode/ runs the same entries' tests).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
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
CORPUS_BLOCK = re.compile(r"<!-- corpus -->\n(?P<body>.*?)<!-- end -->", re.DOTALL)
#: The test modules whose entries make the corpus table, in the table's order.
CORPUS_MODULES = ("tests/realcode/test_published.py", "tests/realcode/test_configs.py")
#: Characters a word may end in that a fold may move ("formula" / "formula:").
_PUNCTUATION = ":,;()[]"


#: Runs commands at several widths in one process: each command line is run
#: once per width, and an analysis asked for twice with the same arguments
#: (by one command or by two) is made once: the output at each width is what
#: a fresh process prints; the trace is the slow part, not the printing.
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
widths, commands = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = []
for argv in commands:
    out.append({})
    for columns in widths:
        os.environ["COLUMNS"] = str(columns)
        printed, code = io.StringIO(), 0
        with contextlib.redirect_stdout(printed):
            try:
                main(argv, prog_name="attncost")
            except SystemExit as exc:
                code = exc.code or 0
        out[-1][columns] = [printed.getvalue(), code]
sys.__stdout__.write(json.dumps(out))
"""


def run_command(command: str, columns: int = WIDE) -> str:
    """What ``command`` (an `attncost ...` line) prints at ``columns``, as a guide shows it."""
    return run_at_widths([command], (columns,))[0][columns]


def run_at_widths(commands: list[str], widths) -> list[dict[int, str]]:
    """What each of ``commands`` prints at each width, from one process."""
    argvs = [shlex.split(command) for command in commands]
    for command, argv in zip(commands, argvs):
        if argv[0] != "attncost":
            raise SystemExit(f"docs/build.py: only attncost commands can run: {command}")
    env = dict(os.environ, PYTHONHASHSEED="0", TERM="dumb")
    env.pop("FORCE_COLOR", None)
    done = subprocess.run([sys.executable, "-c", _AT_WIDTHS, json.dumps(list(widths)),
                           json.dumps([argv[1:] for argv in argvs])], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    try:
        printed = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"docs/build.py: `{commands}` failed:\n{done.stderr}") from None
    return [_shown_outputs(command, outputs, done.stderr)
            for command, outputs in zip(commands, printed)]


def _shown_outputs(command: str, printed: dict, stderr: str) -> dict[int, str]:
    """Each width's output as a guide shows it (exit status 2 is a failure)."""
    out = {}
    for width, (text, code) in printed.items():
        if code == 2:
            raise SystemExit(f"docs/build.py: `{command}` failed:\n{stderr}")
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


def _run_all(commands: list[str], images: list[str], corpus: bool, jobs: int):
    """Every command at both widths (and every image command once), and the
    corpus's rows when a guide shows them (started first: the longest job)."""
    # one process per job, each running the commands of one model (they share
    # its analyses), the models dealt out round the jobs
    by_model: dict[str, list[str]] = {}
    for command in commands:
        by_model.setdefault(shlex.split(command)[2], []).append(command)
    groups: list[list[str]] = [[] for _ in range(jobs)]
    for same in sorted(by_model.values(), key=len, reverse=True):
        min(groups, key=len).extend(same)
    groups = [g for g in groups if g]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        rows = [pool.submit(run_corpus, m) for m in (CORPUS_MODULES if corpus else ())]
        done = list(pool.map(lambda group: run_at_widths(group, (WIDE, NARROW)), groups))
        list(pool.map(run_command, images))
    printed = {c: out for group, outs in zip(groups, done) for c, out in zip(group, outs)}
    return printed, [r.result() for r in rows]


# ------------------------------------------------------------------ the corpus table


def _summary(triples: list[tuple], heads) -> str:
    """"2× local causal, window 16; 2× dense causal; 4 heads"."""
    if not triples:
        return "no sites"
    parts = []
    for (variant, causal, window), count in Counter(triples).items():
        text = f"{count}× {variant} {'causal' if causal else 'bidirectional'}"
        parts.append(text + (f", window {window}" if window is not None else ""))
    heads = sorted(set(heads))
    return "; ".join(parts) + f"; {'/'.join(map(str, heads))} heads"


def _package(module, module_path: Path, name: str) -> str:
    """package==version of what an entry runs: the pinned package its model
    file names (tests/realcode/published_<name>.py), or transformers."""
    from importlib import metadata

    model_file = module_path.parent / f"published_{name}.py"
    if model_file.exists():
        from published_support import PINNED

        text = model_file.read_text(encoding="utf-8")
        pins = {key: version for key, version in PINNED.items()
                if re.search(rf"\b{key}\b", text)}
    else:
        pins = {"transformers": module.TRANSFORMERS}
    shown = []
    for key, pinned in pins.items():
        for dist in sorted(metadata.packages_distributions().get(key, [key])):
            try:
                version = metadata.version(dist)
            except metadata.PackageNotFoundError:
                version = "not installed"
            shown.append(f"{dist}=={version}" + ("" if version == pinned else
                                                 f" (truth read from {pinned})"))
    return ", ".join(shown)


def _tests_by_entry(module) -> dict[str, list]:
    """entry -> [(test function, xfail reason or None)], from the tests'
    own parametrization (the tests of the truth left out)."""
    by_entry: dict[str, list] = {}
    for attr, fn in vars(module).items():
        if not attr.startswith("test_") or attr.startswith("test_truth") or not callable(fn):
            continue
        for mark in getattr(fn, "pytestmark", []):
            if mark.name != "parametrize" or mark.args[0] != "name":
                continue
            for param in mark.args[1]:
                entry, marks = (param, []) if isinstance(param, str) else (param.values[0],
                                                                           param.marks)
                reason = next((m.kwargs.get("reason") for m in marks if m.name == "xfail"), None)
                by_entry.setdefault(entry, []).append((fn, reason))
    return by_entry


def _call(fn, name: str, root: Path):
    """Run one test function for one entry: None if it passed, else what failed."""
    import inspect

    kwargs = {"name": name}
    if "root" in inspect.signature(fn).parameters:
        kwargs["root"] = root
    try:
        fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a verdict, shown in the table
        return f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    return None


def corpus_rows(module_file: str) -> dict:
    """Every entry of one corpus test module: its truth, what attncost says
    and the verdict of each of its tests.  Run in a subprocess of the build."""
    import importlib.util
    import inspect
    import tempfile

    import pytest

    import attncost
    from attncost.errors import ModelError

    path = ROOT / module_file
    for folder in (path.parent.parent, path.parent):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except pytest.skip.Exception as exc:
        return {"rows": [], "missing": [f"{module_file}: {exc}"]}
    root = Path(tempfile.mkdtemp(prefix="attncost-corpus-"))
    entries = {**getattr(module, "ENTRIES", {}), **getattr(module, "CONFIGS", {})}
    refusals = getattr(module, "REFUSALS", {})
    rows, missing = [], []
    for name, tests in _tests_by_entry(module).items():
        row = {"entry": name, "package": _package(module, path, name), "tests": []}
        try:
            for fn, reason in tests:
                row["tests"].append([fn.__name__, reason, _call(fn, name, root)])
        except pytest.skip.Exception as exc:
            missing.append(f"{name}: {exc}")
            continue
        if name in refusals:
            refusal = refusals[name]
            row["truth"] = (f"refused: transformers has no {refusal.attn_implementation} "
                            f"for it; it builds with {', '.join(refusal.works())}")
            folder = module.write_config(name, refusal.fields, root)
            try:
                attncost.analyze(folder, seq_len=64, device="cpu",
                                 attn_implementation=refusal.attn_implementation)
                row["says"] = "analysed it"
            except ModelError as exc:
                row["says"] = "refused: " + str(exc).split(": ", 1)[-1]
            rows.append(row)
            continue
        entry = entries[name]
        if isinstance(entry.sites, dict):
            truth = [(p.variant, p.causal, p.window) for p in entry.sites.values()]
        else:
            truth = [(entry.variant, entry.causal, entry.window)] * entry.sites
        row["truth"] = _summary(truth, [module.HEADS])
        takes_root = "root" in inspect.signature(module.analysed).parameters
        try:
            a = module.analysed(name, root) if takes_root else module.analysed(name)
        except AssertionError as exc:
            row["says"] = str(exc)
            rows.append(row)
            continue
        row["says"] = _summary([(s.variant, s.causal, s.window) for s in a.sites],
                               [s.heads for s in a.sites])
        n = 8 * entry.traced
        row["useful"] = [n, entry.useful(n), int(sum(a.at(s.useful_flops, n, 1) for s in a.sites))]
        row["flops_at"] = [entry.traced, entry.elsewhere]
        rows.append(row)
    return {"rows": rows, "missing": missing}


def run_corpus(module_file: str) -> dict:
    """corpus_rows of one module, from a fresh process (one thread: it runs
    beside the commands)."""
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--corpus-rows",
                           module_file], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1200)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise SystemExit(f"docs/build.py: the corpus of {module_file} failed:\n"
                         f"{done.stderr}") from None


def _number(value: int) -> str:
    return f"{value:,}"


def corpus_table(results: list[dict]) -> str:
    """The Markdown of a corpus block: one row per entry, then the
    differences the tests record (their strict xfails)."""
    head = ("| entry | package | truth | attncost says | useful FLOPs at 8× the traced N | "
            "attncost's useful FLOPs | FLOPs against FlopCounterMode | agrees |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    recorded, unexpected = [], []
    for result in results:
        for row in result["rows"]:
            verdicts = {test: (reason, failure) for test, reason, failure in row["tests"]}
            useful, attncost_useful = "–", "–"
            if "useful" in row:
                n, truth, got = row["useful"]
                useful, attncost_useful = f"{_number(truth)} (N={n:,})", _number(got)
            flops = "–"
            if "flops_at" in row:
                traced, elsewhere = row["flops_at"]
                at = {"test_flops_traced": f"N={traced:,}, B=1",
                      "test_flops_elsewhere": f"N={elsewhere:,}, B=2"}
                differ = [where for test, where in at.items() if verdicts.get(test, (0, 0))[1]]
                flops = ("differ at " + " and ".join(differ) if differ else
                         "equal at " + " and ".join(at.values()))
            failed = [test for test, (reason, failure) in verdicts.items() if failure]
            for test, (reason, failure) in verdicts.items():
                test_id = f"`{test}[{row['entry']}]`"
                if failure and reason:
                    recorded.append(f"- {test_id}: {reason}")
                elif failure:
                    unexpected.append(f"- {test_id} fails, and no strict xfail records it: "
                                      f"{failure}")
                elif reason:
                    unexpected.append(f"- {test_id} passes, but a strict xfail says: {reason}")
            agrees = "yes" if not failed else "no: " + ", ".join(
                t.removeprefix("test_") for t in failed)
            cells = [f"`{row['entry']}`", row["package"], row["truth"], row["says"], useful,
                     attncost_useful, flops, agrees]
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines.append("")
    if recorded:
        lines += ["Where attncost differs from the truth (each a strict xfail in the tests):", "",
                  *recorded]
    else:
        lines.append("attncost agrees with the truth on every entry: no test records a "
                     "difference.")
    if unexpected:
        lines += ["", "Not yet recorded in the tests:", "", *unexpected]
    return "\n".join(lines) + "\n"


def build(check: bool, jobs: int, with_corpus: bool = True) -> int:
    guides = sorted(GUIDES.glob("*.md")) + [ROOT / "README.md"]
    texts = {g: g.read_text(encoding="utf-8") for g in guides}
    commands = list(dict.fromkeys(m.group("command") for text in texts.values()
                                  for m in RUN_BLOCK.finditer(text)))
    images = [] if check else list(dict.fromkeys(m.group("command") for text in texts.values()
                                                 for m in IMAGE.finditer(text)))
    corpus = with_corpus and any(CORPUS_BLOCK.search(text) for text in texts.values())
    outputs, corpus_results = _run_all(commands, images, corpus, jobs)
    missing = [m for result in corpus_results for m in result["missing"]]
    table = None if missing or not corpus else corpus_table(corpus_results)
    if missing:
        print("the corpus table is left as it is (neither rebuilt nor checked): not installed "
              "here:\n  " + "\n  ".join(missing))

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
        if table is not None:
            for m in CORPUS_BLOCK.finditer(new):
                if m.group("body") != table:
                    stale.append(f"{guide.relative_to(ROOT)}: the corpus table")
            new = CORPUS_BLOCK.sub(lambda m: f"<!-- corpus -->\n{table}<!-- end -->", new)
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
    parser.add_argument("--no-corpus", action="store_true",
                        help="Leave the corpus table as it is (its entries are checked by "
                             "tests/realcode/; rebuilding it runs every one of them).")
    parser.add_argument("--corpus-rows", metavar="TEST_MODULE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.corpus_rows:  # one corpus module's rows, as JSON on the last line
        with contextlib.redirect_stdout(sys.stderr):
            rows = corpus_rows(args.corpus_rows)
        print(json.dumps(rows))
        return 0
    return build(args.check, max(1, args.jobs), with_corpus=not args.no_corpus)


if __name__ == "__main__":
    sys.exit(main())
