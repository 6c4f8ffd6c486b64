"""How it is shown: every byte attncost writes comes from this package.

* schema.py: the JSON contract (JSON and YAML are the same objects);
* sentences.py: every sentence, from the data;
* rows.py, tables.py, markdown.py: tables for the terminal and Markdown;
* figures.py: plots; validation.py: `attncost validate`;
* console.py: progress, warnings and errors on stderr.

``show_*`` write one answer in one format to stdout (or to ``console``).
Submodules are imported when first used: importing this package imports
neither torch nor sympy (the command line starts without them).
"""
from __future__ import annotations

#: Output formats, by command.
FORMATS = ("table", "json", "yaml", "markdown")


def write(text: str, newline: bool = True) -> None:
    """Write text to stdout: the one place plain output leaves attncost."""
    import click

    click.echo(text, nl=newline)


def write_lines(lines: list[str]) -> None:
    """Sentences folded at word boundaries to the terminal's width."""
    from .console import wrapped

    for line in wrapped(lines):
        write(line)


def warn(messages: list[str]) -> None:
    """Warnings on stderr, one line each (JSON and YAML carry them too)."""
    import click

    from .console import warning_lines

    for line in warning_lines(messages):
        click.echo(line, err=True)


def _structured(data, fmt: str, yaml_blank_line: bool = True) -> bool:
    """Write ``data`` as JSON or YAML; False for the other formats."""
    if fmt == "json":
        import json

        write(json.dumps(data, indent=2))
    elif fmt == "yaml":
        import json

        import yaml

        plain = json.loads(json.dumps(data))  # the JSON's own types: tuples become lists
        write(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True),
              newline=yaml_blank_line)
    else:
        return False
    return True


def _console(console):
    if console is not None:
        return console
    from rich.console import Console

    return Console()


def show_analysis(a, fmt: str = "table", console=None, time=None) -> None:
    """One analysis; ``time`` (a latency.TimeEstimate) adds the time on a GPU."""
    from . import schema

    if fmt in ("json", "yaml"):
        _structured(schema.analysis_dict(a, time), fmt)
    elif fmt == "markdown":
        from . import markdown

        write(markdown.analysis_markdown(a, time))
    else:
        from . import tables

        tables.print_analysis(a, _console(console), time)
    warn(a.warnings)


def show_fits(answer, fmt: str = "table") -> None:
    from . import schema

    if _structured(schema.fits_dict(answer), fmt, yaml_blank_line=False):
        pass
    elif fmt == "markdown":
        from .markdown import fits_markdown

        write(fits_markdown(answer))
    else:
        from .sentences import fits_lines

        write_lines(fits_lines(answer))
    warn(answer.warnings)


def show_comparison(c, fmt: str = "table", console=None) -> None:
    from . import schema

    if _structured(schema.comparison_dict(c), fmt):
        pass
    elif fmt == "markdown":
        from . import markdown

        write(markdown.comparison_markdown(c))
    else:
        from . import tables

        tables.print_comparison(c, _console(console))
    warn([w for ch in c.choices for w in ch.analysis.warnings])


def show_gpus(gpus: dict, fmt: str = "table", console=None) -> None:
    from . import schema

    if _structured([schema.gpu_dict(g) for g in gpus.values()], fmt):
        return
    if fmt == "markdown":
        from .markdown import gpus_markdown

        write(gpus_markdown(gpus))
    else:
        from . import tables

        tables.print_gpus(gpus, _console(console))


def show_sweep(data, path) -> None:
    from .figures import memory_axis_top
    from .sentences import sweep_lines

    clip_note = memory_axis_top(data)[1]
    write_lines(sweep_lines(data, path) + ([clip_note] if clip_note else []))
    warn([w for c in data.curves for a in c.pieces for w in a.warnings])


def show_validation(result: dict, fmt: str = "table", console=None) -> None:
    if _structured(result, fmt):
        return
    if fmt == "markdown":
        from .validation import validation_markdown

        write(validation_markdown(result))
    else:
        from .validation import print_validation

        print_validation(result, _console(console))
