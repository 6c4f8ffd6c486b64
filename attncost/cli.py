"""The `attncost` command line: click only, over the library.

Bad input ends with exit status 2 and a one- or two-line message on stderr;
``--debug`` shows the traceback instead.  Option choices come from the
registries they name (dtypes, devices, implementations, variants).
"""
from __future__ import annotations

import functools
import sys
import traceback

import click
from rich.console import Console

from .errors import AttncostError, first_line
from .loader import ATTN_IMPLEMENTATIONS
from .questions.baselines import BASELINES
from .render import FORMATS
from .rules import DEVICES
from .units import MODEL_DTYPES, parse_length


class LengthType(click.ParamType):
    name = "N"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_length(value)
        except AttncostError as exc:
            self.fail(str(exc), param, ctx)


LENGTH = LengthType()


def _stderr(msg: str) -> None:
    click.echo(f"attncost: error: {msg}", err=True)


def handles_errors(fn):
    """Turn AttncostError (and anything unexpected) into exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, debug=False, **kwargs):
        try:
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

    return click.option("--debug", is_flag=True, help="Show the traceback of an error.")(wrapper)


def _apply(fn, options):
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def _format_option(choices, default="table"):
    return click.option("--format", "fmt", type=click.Choice(list(choices)), default=default,
                        show_default=True)


DTYPE = click.option("--dtype", type=click.Choice(MODEL_DTYPES), default=None,
                     help="Default: float32 for a .py file, bfloat16 for a config.")
DEVICE = click.option("--device", type=click.Choice(DEVICES), default="cuda", show_default=True,
                      help="The device whose kernels are modelled.")
BATCH = click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
KV_CACHE = click.option("--kv-cache/--no-kv-cache", default=None,
                        help="For transformers configs (default: the config's use_cache).")
SEQ_LEN = click.option("--seq-len", "seq_len", type=LENGTH, required=True,
                       help="Sequence length N: 4096, 4k, 128k, 1M.")
GPU_SPEC = click.option("--gpu-spec", "gpu_specs", multiple=True, type=click.Path(),
                        help="A YAML file of more GPUs.")


def _reserve_option(each: str = ""):
    return click.option("--reserve", default=None, help=f"Memory held back on{each} --gpu for "
                        "the CUDA context and allocator (default 1GiB).")


def _implementations_option(help_text: str, multiple: bool):
    dest = "attn_implementations" if multiple else "attn_implementation"
    return click.option("--attn-implementation", dest, multiple=multiple,
                        type=click.Choice(ATTN_IMPLEMENTATIONS), default=None if not multiple else (),
                        help=help_text)


def model_options(formats):
    """Options shared by the commands that analyze one MODEL at one N."""
    def wrap(fn):
        return _apply(fn, [
            click.argument("model", type=click.Path()), SEQ_LEN, BATCH, DTYPE, DEVICE,
            _implementations_option("For transformers configs (default sdpa).", multiple=False),
            KV_CACHE, _format_option(formats)])
    return wrap


def _progress():
    """A status line on stderr while the model is traced (TTY only)."""
    err = Console(stderr=True)
    if not err.is_terminal:
        return None, None
    status = err.status("attncost: loading the model")
    return status, (lambda msg: status.update(f"attncost: {msg}"))


def _run_analysis(model, seq_len, batch, dtype, device, attn_implementation, kv_cache):
    from .analysis import analyze

    status, progress = _progress()
    kwargs = dict(batch=batch, dtype=dtype, device=device,
                  attn_implementation=attn_implementation, kv_cache=kv_cache)
    if status is not None:
        with status:
            return analyze(model, seq_len, progress=progress, **kwargs)
    return analyze(model, seq_len, **kwargs)


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


@main.command()
@model_options(FORMATS)
@handles_errors
def analyze(model, seq_len, batch, dtype, device, attn_implementation, kv_cache, fmt):
    """FLOPs and memory of every attention site, per layer and per head."""
    from .render import show_analysis

    analysis = _run_analysis(model, seq_len, batch, dtype, device, attn_implementation, kv_cache)
    show_analysis(analysis, fmt, Console())


@main.command()
@model_options(FORMATS)
@click.option("--gpu", default=None, help="A GPU from `attncost specs`.")
@click.option("--memory", "memory_size", default=None, help="A budget: 24GiB, 80GB, 24G, bytes.")
@_reserve_option()
@GPU_SPEC
@handles_errors
def fits(model, seq_len, batch, dtype, device, attn_implementation, kv_cache, fmt,
         gpu, memory_size, reserve, gpu_specs):
    """Does N fit the GPU's memory, with what headroom, and what is the largest N that does."""
    from .questions.fits import fits as answer_fits
    from .render import show_fits

    if (gpu is None) == (memory_size is None):
        raise AttncostError("give exactly one of --gpu NAME or --memory SIZE")
    analysis = _run_analysis(model, seq_len, batch, dtype, device, attn_implementation, kv_cache)
    answer = answer_fits(analysis, gpu=gpu, memory=memory_size, reserve=reserve,
                         gpu_specs=gpu_specs)
    show_fits(answer, fmt)
    sys.exit(0 if answer.result.fits else 1)


@main.command()
@GPU_SPEC
@click.option("--format", "fmt", type=click.Choice(["table", "json", "yaml"]), default="table")
@handles_errors
def specs(gpu_specs, fmt):
    """The GPUs attncost knows: memory, bandwidth, peak FLOP/s."""
    from .gpus import load_gpus
    from .render import show_gpus

    show_gpus(load_gpus(gpu_specs), fmt, Console())


def _variant_choice():
    from .kernels import VARIANTS

    return click.Choice(list(VARIANTS))


@main.command()
@click.option("--variant", "variants", multiple=True, type=_variant_choice())
@click.option("--device", type=click.Choice(DEVICES), default=None,
              help="Default: cuda when available, else cpu (correctness only).")
@click.option("--seq-lens", default=None, help="Comma-separated lengths, e.g. 1k,4k,16k.")
@click.option("--plot", "plot_path", type=click.Path(), default=None, help="Write a plot (png/svg).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
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
    from .kernels.harness import run_validation

    err = Console(stderr=True)
    result = run_validation(variants=list(variants) or None, device=device, seq_lens=lengths,
                            plot=plot_path, progress=(lambda m: err.print(f"attncost: {m}"))
                            if err.is_terminal else None)
    show_validation(result, fmt, Console())
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
@click.option("--gpu", "gpu_names", multiple=True, help="A GPU from `attncost specs` "
              "(repeat for more): its memory as a line, the largest N that fits as a marker.")
@_implementations_option("For transformers configs; repeat for one curve each (default sdpa).",
                         multiple=True)
@BATCH
@DTYPE
@DEVICE
@KV_CACHE
@_reserve_option(" each")
@GPU_SPEC
@click.option("--points", type=click.IntRange(min=2, max=1000), default=60, show_default=True,
              help="How many lengths to evaluate the formulas at.")
@click.option("--out", "out", required=True, type=click.Path(), help="The image: .png or .svg.")
@handles_errors
def plot(model, seq_range, gpu_names, attn_implementations, batch, dtype, device, kv_cache,
         reserve, gpu_specs, points, out):
    """FLOPs and peak memory against N (log-log), one curve per attention implementation."""
    from .questions.sweep import plot_data
    from .render import show_sweep
    from .render.figures import draw

    data = plot_data(model, _seq_range(seq_range), batch=batch, dtype=dtype, device=device,
                     attn_implementations=attn_implementations or (None,), kv_cache=kv_cache,
                     gpus=_gpu_budgets(gpu_names, gpu_specs, reserve), points=points)
    show_sweep(data, draw(data, out))


@main.command()
@click.argument("model", type=click.Path())
@SEQ_LEN
@_implementations_option("For transformers configs; repeat to compare (default sdpa).",
                         multiple=True)
@click.option("--dtype", "dtypes", multiple=True, type=click.Choice(MODEL_DTYPES),
              help="Repeat to compare (default: float32 for a .py file, bfloat16 for a config).")
@BATCH
@DEVICE
@KV_CACHE
@click.option("--gpu", "gpu_name", default=None,
              help="A GPU from `attncost specs`: adds the largest N that fits each choice.")
@_reserve_option()
@GPU_SPEC
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(BASELINES),
              help="Count FLOPs with fvcore (a real forward; small models only) or torch's "
                   "FlopCounterMode too, per layer.")
@_format_option(("table", "json", "markdown"))
@handles_errors
def compare(model, seq_len, attn_implementations, dtypes, batch, device, kv_cache, gpu_name,
            reserve, gpu_specs, baselines, fmt):
    """One model under several attention implementations or dtypes, and other FLOP counters."""
    from .questions.compare import compare_choices
    from .render import show_comparison

    gpu, budget = _gpu_budgets([gpu_name], gpu_specs, reserve)[0] if gpu_name else (None, None)
    comparison = compare_choices(model, seq_len, batch=batch, device=device,
                                 attn_implementations=attn_implementations or (None,),
                                 dtypes=dtypes or (None,), kv_cache=kv_cache,
                                 gpu=gpu, budget_bytes=budget, baselines=baselines)
    show_comparison(comparison, fmt, Console())


if __name__ == "__main__":  # pragma: no cover
    main()
