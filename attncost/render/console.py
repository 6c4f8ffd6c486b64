"""What reaches the terminal besides the answer: progress, warnings, errors.

* ``working()``: a status line on stderr while slow work runs (TTY only;
  nothing at all when stderr is not a terminal);
* ``user_code()``: what the model's own code prints goes to stderr (never
  into ``--format json`` on stdout), and torch's and transformers' own
  logging and Python warnings stay quiet (``--debug`` lets them through);
* ``clean()``: no ``<... object at 0x7f...>`` in a message;
* ``wrapped()``: lines folded at word boundaries to the terminal's width
  (or $COLUMNS; a file or a pipe without $COLUMNS gets whole lines).

Nothing here imports torch; rich is imported when first needed.
"""
from __future__ import annotations

import contextlib
import logging
import re
import sys
import textwrap
import warnings
from typing import Callable, Iterator

_OBJECT_REPR = re.compile(r"<(?:[\w.]+\.)?(\w+) object at 0x[0-9a-fA-F]+>")
_ADDRESS = re.compile(r"\s*\bat 0x[0-9a-fA-F]{6,}\b|\b0x[0-9a-fA-F]{8,}\b")


def clean(text: str) -> str:
    """A message without memory addresses: '<torch.X object at 0x7f..>' -> '<X>'."""
    text = _OBJECT_REPR.sub(lambda m: f"<{m.group(1)}>", str(text))
    return _ADDRESS.sub("", text)


def wrap_width() -> int | None:
    """The width sentences are folded to: $COLUMNS, else the terminal's; None
    (not folded) when stdout is neither a terminal nor given a width, as in a
    file or a pipe, where a line is best kept whole for grep."""
    import os

    if not os.environ.get("COLUMNS") and not getattr(sys.stdout, "isatty", lambda: False)():
        return None
    from rich.console import Console

    return Console().width


def wrapped(lines: list[str], width: int | None = None) -> list[str]:
    """Each line folded at spaces to ``width`` (default ``wrap_width()``); a
    continuation is indented two more than its line.  Words (a site name, a
    formula's term) are never cut."""
    width = width or wrap_width()
    if not width:
        return list(lines)
    out: list[str] = []
    for line in lines:
        if len(line) <= width:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip(" ")))
        out.extend(textwrap.wrap(line, width=width, subsequent_indent=indent + "  ",
                                 break_long_words=False, break_on_hyphens=False) or [line])
    return out


def stderr_is_terminal() -> bool:
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


@contextlib.contextmanager
def working(first: str = "loading the model") -> Iterator[Callable[[str], None]]:
    """A spinner on stderr, on a terminal only; yields ``say(message)`` to
    change its text.  Not a terminal: ``say`` does nothing, nothing is written."""
    if not stderr_is_terminal():
        yield lambda message: None
        return
    from rich.console import Console

    err = Console(stderr=True)
    with err.status(f"attncost: {first}") as status:
        yield lambda message: status.update(f"attncost: {clean(message)}")


#: Loggers of the libraries attncost drives; their records are internals.
QUIET_LOGGERS = ("torch", "transformers", "fvcore", "matplotlib", "triton")


@contextlib.contextmanager
def user_code(debug: bool = False) -> Iterator[None]:
    """While the model is built and run: its prints go to stderr, and the
    libraries' own logging and Python warnings are held back (``debug``:
    logging and warnings are left alone; prints still go to stderr)."""
    with contextlib.redirect_stdout(sys.stderr):
        if debug:
            yield
            return
        loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
        levels = [lg.level for lg in loggers]
        previous = logging.root.manager.disable
        try:
            for lg in loggers:
                lg.setLevel(logging.CRITICAL + 1)
            logging.disable(logging.ERROR)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            logging.disable(previous)
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def warning_lines(messages: list[str]) -> list[str]:
    """'attncost: warning: ...', one line each, once each."""
    return [f"attncost: warning: {clean(m)}" for m in dict.fromkeys(messages)]
