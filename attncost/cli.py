"""The `attncost` command line: click only, over the library.

Bad input ends with exit status 2 and a one- or two-line message on stderr;
``--debug`` shows the traceback instead.  Option choices come from the
registries they name (dtypes, devices, implementations, variants), read when
first needed: importing this module imports neither torch nor sympy, so
``attncost --version`` and ``--help`` are quick.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import os
import sys
import traceback
import warnings

import click

from .cli_options import (BASELINE_NAMES, BATCH, CALIBRATION, DEVICE, DEVICES, DTYPE, GPU_HELP,
                          GPU_SPEC, KV_CACHE, SEQ_LEN, SIZE_HELP, VARIANT_NAMES,
                          format_option, implementations_option, reserve_option,
                          analysis_options, model_options)
from .errors import AttncostError, first_line
from .units import MODEL_DTYPES, parse_length


def _stderr(msg: str) -> None:
    from .render.console import clean

    click.echo(f"attncost: error: {clean(msg)}", err=True)


def _debugging() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get("attncost.debug"))


def handles_errors(fn):
    """Turn AttncostError (and anything unexpected) into exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, debug=False, **kwargs):
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.meta["attncost.debug"] = debug
        try:
            with warnings.catch_warnings():
                if not debug:  # attncost's own are kept and said as "attncost: warning:"
                    warnings.simplefilter("ignore", RuntimeWarning)
                return fn(*args, **kwargs)
        except AttncostError as exc:
            if debug:
                traceback.print_exc()
            _stderr(str(exc))
            sys.exit(2)
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug, or a model that broke in an unforeseen way
            if debug:
                traceback.print_exc()
            else:
                _stderr(f"{type(exc).__name__}: {first_line(exc)}")
                click.echo("attncost: run again with --debug for the traceback", err=True)
            sys.exit(2)

    return click.option("--debug", is_flag=True, help="Show the traceback of an error, and "
                        "torch's own logging and warnings.")(wrapper)


@contextlib.contextmanager
def busy(first: str = "loading the model"):
    """Around slow work that runs the user's model: a spinner on a TTY
    (nothing otherwise), the model's prints on stderr, the libraries quiet.
    Yields ``say(message)``, which updates the spinner."""
    from .render.console import user_code, working

    with working(first) as say, user_code(debug=_debugging()):
        yield say


def _run_analysis(model, seq_len, say, **options):
    """``analyze(model, seq_len, **options)``: the options are analyze's keywords."""
    from .analysis import analyze

    return analyze(model, seq_len, progress=say, **options)


class AttncostGroup(click.Group):
    """Usage errors in two lines on stderr, exit status 2."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.UsageError as exc:
            _stderr(exc.format_message())
            cmd = exc.ctx.command_path if exc.ctx else "attncost"
            click.echo(f"attncost: see '{cmd} --help'", err=True)
            sys.exit(2)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            sys.exit(1)


@click.group(cls=AttncostGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="attncost")
def main():
    """What the attention in a PyTorch model costs, as formulas in the sequence length N."""


#: Allocations between young-generation collections in a command's process.
#: A trace allocates hundreds of thousands of long-lived objects (graph
#: nodes, SymPy terms): collecting every 700 of them re-scans them often.
GC_THRESHOLD = (50_000, 20, 20)


def run() -> None:
    """The ``attncost`` program: ``main``, then the process ends as soon as
    its output is written.  Freeing a traced model's objects one by one at
    interpreter exit takes a second for a 40-layer model; the operating
    system frees them at once.  (Tests call ``main`` itself.)"""
    gc.set_threshold(*GC_THRESHOLD)
    code: int | str | None = 0
    try:
        main(prog_name="attncost")
    except SystemExit as exc:
        code = exc.code
    atexit._run_exitfuncs()
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code or 0)


@main.command()
@model_options()
@click.option("--gpu", default=None, help=GPU_HELP + ": adds the time of prefill and decode.")
@CALIBRATION
@GPU_SPEC
@handles_errors
def analyze(model, seq_len, fmt, gpu, calibration, gpu_specs, **options):
    """FLOPs and memory of every attention site, per layer and per head."""
    from .render import show_analysis

    timed = gpu is not None or calibration is not None
    if timed:
        from .questions.latency import resolve, time_model

        resolve(gpu, calibration, "bfloat16", gpu_specs)  # a bad name or file before tracing
    with busy() as say:
        analysis = _run_analysis(model, seq_len, say, **options)
        if timed:
            say("estimating the time on the GPU")
        time = time_model(analysis, gpu, calibration, gpu_specs) if timed else None
    show_analysis(analysis, fmt, time=time)


@main.command()
@model_options()
@click.option("--gpu", default=None, help=GPU_HELP + ".")
@click.option("--memory", "memory_size", default=None,
              help=f"A budget for tensors: 24GiB, 24G, 80GB or bytes ({SIZE_HELP}).")
@reserve_option()
@GPU_SPEC
@CALIBRATION
@click.option("--max-batch", "want_max_batch", is_flag=True,
              help="Also the largest batch that fits at N (how many sequences of this length "
                   "the memory holds at once, KV cache included).")
@handles_errors
def fits(model, seq_len, fmt, gpu, memory_size, reserve, gpu_specs, calibration, want_max_batch,
         **options):
    """Does N fit the GPU's memory, with what headroom, and what is the largest N that does."""
    from .questions.fits import budget_for
    from .questions.fits import fits as answer_fits
    from .render import show_fits

    budget_for(gpu=gpu, memory=memory_size, reserve=reserve, gpu_specs=gpu_specs)  # before tracing
    with busy() as say:
        analysis = _run_analysis(model, seq_len, say, **options)
        answer = answer_fits(analysis, gpu=gpu, memory=memory_size, reserve=reserve,
                             gpu_specs=gpu_specs, progress=say, want_max_batch=want_max_batch,
                             calibration=calibration)
    show_fits(answer, fmt)
    sys.exit(0 if answer.result.fits else 1)


@main.command()
@GPU_SPEC
@format_option()
@handles_errors
def specs(gpu_specs, fmt):
    """The GPUs attncost knows: memory, bandwidth, peak FLOP/s."""
    from .gpus import load_gpus
    from .render import show_gpus

    show_gpus(load_gpus(gpu_specs), fmt)


@main.command()
@click.option("--out", type=click.Path(), default=None,
              help="The YAML to write (default: calibration_<gpu>_<dtype>.yaml here).")
@click.option("--dtype", type=click.Choice(MODEL_DTYPES), default="bfloat16", show_default=True)
@click.option("--quick", is_flag=True, help="Fewer sizes and lengths: a shorter run.")
@handles_errors
def calibrate(out, dtype, quick):
    """Measure this machine's CUDA GPU for `analyze --gpu`: matmuls, attention kernels,
    bandwidth and the cost of one launch."""
    from .calibration.measure import default_out, run_calibration, write_calibration
    from .render import write_lines

    with busy("measuring the GPU") as say:
        data = run_calibration(dtype, quick, progress=say)
    path = out or default_out(data)
    write_calibration(data, path)
    write_lines([f"wrote {path}: {data['gpu']}, {data['dtype']}, torch {data['torch']}"]
                + [f"note: {note}" for note in data["notes"]])


@main.command()
@click.option("--variant", "variants", multiple=True, type=VARIANT_NAMES)
@click.option("--device", type=DEVICES, default=None,
              help="Default: cuda when available, else cpu (correctness only).")
@click.option("--seq-lens", default=None,
              help="Comma-separated lengths, e.g. 1k,4k,16k (a GPU only: a CPU checks tiny "
                   "shapes).")
@click.option("--plot", "plot_path", type=click.Path(), default=None, help="Write a plot (png/svg).")
@format_option()
@handles_errors
def validate(variants, device, seq_lens, plot_path, fmt):
    """Run the bundled kernels and compare measurements with the formulas."""
    import torch

    from .render import show_validation

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise AttncostError("--device cuda: no CUDA device is available here; use --device cpu")
    lengths = [parse_length(x) for x in seq_lens.split(",")] if seq_lens else None
    if lengths and device == "cpu":
        click.echo("attncost: note: --seq-lens is ignored on a CPU (the Triton interpreter "
                   "checks correctness at fixed tiny shapes)", err=True)
    from .kernels.harness import run_validation

    with busy("starting the kernels") as say:
        result = run_validation(variants=list(variants) or None, device=device, seq_lens=lengths,
                                plot=plot_path, progress=say)
    show_validation(result, fmt)
    if not all(r.get("ok", r.get("correct")) for r in result["results"]):
        sys.exit(1)


def _gpu_budgets(names, gpu_specs, reserve):
    """(GPU, bytes left for tensors) for each name, less the reserve as in `fits --gpu`."""
    from .questions.fits import budget_for

    out = []
    for name in names:
        budget, spec = budget_for(gpu=name, reserve=reserve, gpu_specs=gpu_specs)
        out.append((spec, budget))
    return out


def _seq_range(text: str) -> tuple[int, int]:
    bounds = text.split("..")
    if len(bounds) != 2:
        raise AttncostError(f"--seq-len {text!r}: give a range such as 1k..1M")
    lo, hi = (parse_length(x) for x in bounds)
    if hi <= lo:
        raise AttncostError(f"--seq-len {text}: the end must be above the start")
    return lo, hi


@main.command()
@click.argument("model", type=click.Path())
@click.option("--seq-len", "seq_range", required=True, metavar="LO..HI",
              help="The range of N to plot: 1k..1M.")
@click.option("--gpu", "gpu_names", multiple=True, help=GPU_HELP + "; repeat for more: its "
              "memory as a line, the largest N that fits as a marker.")
@implementations_option("For transformers configs; repeat for one curve each (default sdpa).",
                         multiple=True)
@BATCH
@DTYPE
@DEVICE
@KV_CACHE
@analysis_options
@reserve_option(" each")
@GPU_SPEC
@click.option("--points", type=click.IntRange(min=2, max=1000), default=60, show_default=True,
              help="How many lengths to evaluate the formulas at.")
@click.option("--out", "out", required=True, type=click.Path(), help="The image: .png or .svg.")
@handles_errors
def plot(model, seq_range, gpu_names, attn_implementations, batch, dtype, device, kv_cache,
         reserve, gpu_specs, points, out, **options):
    """FLOPs and peak memory against N (log-log), one curve per attention implementation."""
    from .questions.sweep import plot_data
    from .render import show_sweep
    from .render.figures import check_out, draw

    lengths, gpus = _seq_range(seq_range), _gpu_budgets(gpu_names, gpu_specs, reserve)
    check_out(out)
    with busy() as say:
        data = plot_data(model, lengths, batch=batch, dtype=dtype, device=device,
                         attn_implementations=attn_implementations or (None,), kv_cache=kv_cache,
                         gpus=gpus, points=points, progress=say, **options)
        say(f"drawing {out}")
        path = draw(data, out)
    show_sweep(data, path)


@main.command()
@click.argument("model", type=click.Path())
@SEQ_LEN
@implementations_option("For transformers configs; repeat to compare (default sdpa).",
                         multiple=True)
@click.option("--dtype", "dtypes", multiple=True, type=click.Choice(MODEL_DTYPES),
              help="Repeat to compare (default: float32 for a .py file, bfloat16 for a config).")
@BATCH
@DEVICE
@KV_CACHE
@analysis_options
@click.option("--gpu", "gpu_name", default=None,
              help=GPU_HELP + ": adds the largest N that fits each choice.")
@reserve_option()
@GPU_SPEC
@click.option("--baseline", "baselines", multiple=True, type=BASELINE_NAMES,
              help="Count FLOPs with fvcore (a real forward; small models only) or torch's "
                   "FlopCounterMode too, per layer.")
@format_option()
@handles_errors
def compare(model, seq_len, attn_implementations, dtypes, batch, device, kv_cache, gpu_name,
            reserve, gpu_specs, baselines, fmt, **options):
    """One model under several attention implementations or dtypes, and other FLOP counters."""
    from .questions.compare import compare_choices
    from .render import show_comparison

    gpu, budget = _gpu_budgets([gpu_name], gpu_specs, reserve)[0] if gpu_name else (None, None)
    with busy() as say:
        comparison = compare_choices(model, seq_len, batch=batch, device=device,
                                     attn_implementations=attn_implementations or (None,),
                                     dtypes=dtypes or (None,), kv_cache=kv_cache,
                                     gpu=gpu, budget_bytes=budget, baselines=baselines,
                                     progress=say, **options)
    show_comparison(comparison, fmt)


if __name__ == "__main__":  # pragma: no cover
    run()
