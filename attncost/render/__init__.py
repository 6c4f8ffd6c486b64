"""How it is shown: every byte attncost writes comes from this package.

* schema.py: the JSON contract (JSON and YAML are the same objects);
* sentences.py: every sentence, from the data;
* rows.py, tables.py, markdown.py: tables for the terminal and Markdown;
* figures.py: plots; validation.py: `attncost validate`.

``show_*`` write one answer in one format to stdout (or to ``console``).
"""
from __future__ import annotations

import json

import click
import yaml
from rich.console import Console

from . import markdown, schema, tables
from .sentences import fits_lines, sweep_lines

#: Output formats, by command.
FORMATS = ("table", "json", "yaml", "markdown")


def write(text: str, newline: bool = True) -> None:
    """Write text to stdout: the one place plain output leaves attncost."""
    click.echo(text, nl=newline)


def _structured(data, fmt: str, yaml_blank_line: bool = True) -> bool:
    """Write ``data`` as JSON or YAML; False for the other formats."""
    if fmt == "json":
        write(json.dumps(data, indent=2))
    elif fmt == "yaml":
        write(yaml.safe_dump(data, sort_keys=False), newline=yaml_blank_line)
    else:
        return False
    return True


def show_analysis(a, fmt: str = "table", console: Console | None = None) -> None:
    if fmt in ("json", "yaml"):
        _structured(schema.analysis_dict(a), fmt)
    elif fmt == "markdown":
        write(markdown.analysis_markdown(a))
    else:
        tables.print_analysis(a, console or Console())


def show_fits(answer, fmt: str = "table") -> None:
    if not _structured(schema.fits_dict(answer), fmt, yaml_blank_line=False):
        for line in fits_lines(answer):
            write(line)


def show_comparison(c, fmt: str = "table", console: Console | None = None) -> None:
    if _structured(schema.comparison_dict(c), fmt):
        pass
    elif fmt == "markdown":
        write(markdown.comparison_markdown(c))
    else:
        tables.print_comparison(c, console or Console())


def show_gpus(gpus: dict, fmt: str = "table", console: Console | None = None) -> None:
    if not _structured([schema.gpu_dict(g) for g in gpus.values()], fmt):
        tables.print_gpus(gpus, console or Console())


def show_sweep(data, path) -> None:
    for line in sweep_lines(data, path):
        write(line)


def show_validation(result: dict, fmt: str = "table", console: Console | None = None) -> None:
    from .validation import print_validation

    if fmt == "json":
        write(json.dumps(result, indent=2))
    else:
        print_validation(result, console or Console())
