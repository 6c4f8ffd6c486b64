"""The `attncost` command line: a thin layer over the library.

Bad input ends with exit status 2 and a one- or two-line message on stderr;
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import functools
import json
import re
import sys
import traceback

import click
from rich.console import Console

from .errors import AttncostError

_SUFFIX = {"": 1, "k": 1 << 10, "K": 1 << 10, "m": 1 << 20, "M": 1 << 20}


def parse_length(text: str) -> int:
    """4096, 4k (= 4096), 128k, 1M (= 1048576)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", str(text))
    if not m:
        raise AttncostError(f"--seq-len {text!r} is not a length: use a positive integer "
                            "or a suffix such as 4k, 128k, 1M")
    value = int(m.group(1)) * _SUFFIX[m.group(2)]
    if value <= 0:
        raise AttncostError(f"--seq-len must be positive, not {text}")
    return value


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
                _stderr(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
                click.echo("attncost: run again with --debug for the traceback", err=True)
            sys.exit(2)

    return click.option("--debug", is_flag=True, help="Show the traceback of an error.")(wrapper)


def model_options(fn):
    """Options shared by the commands that take a MODEL."""
    options = [
        click.argument("model", type=click.Path()),
        click.option("--seq-len", "seq_len", type=LENGTH, required=True,
                     help="Sequence length N: 4096, 4k, 128k, 1M."),
        click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True),
        click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
                     help="Default: float32 for a .py file, bfloat16 for a config."),
        click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda",
                     show_default=True, help="The device whose kernels are modelled."),
        click.option("--attn-implementation", type=click.Choice(["eager", "sdpa", "flex_attention"]),
                     default=None, help="For transformers configs (default sdpa)."),
        click.option("--kv-cache/--no-kv-cache", default=None,
                     help="For transformers configs (default: the config's use_cache)."),
        click.option("--format", "fmt", type=click.Choice(["table", "json", "yaml", "markdown"]),
                     default="table", show_default=True),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def _progress():
    """A status line on stderr while the model is traced (TTY only)."""
    err = Console(stderr=True)
    if not err.is_terminal:
        return None, None
    status = err.status("attncost: loading the model")
    return status, (lambda msg: status.update(f"attncost: {msg}"))


def _run_analysis(model, seq_len, batch, dtype, device, attn_implementation, kv_cache, fmt):
    from .analysis import analyze

    status, progress = _progress()
    if status is not None:
        with status:
            return analyze(model, seq_len, batch=batch, dtype=dtype, device=device,
                           attn_implementation=attn_implementation, kv_cache=kv_cache,
                           progress=progress)
    return analyze(model, seq_len, batch=batch, dtype=dtype, device=device,
                   attn_implementation=attn_implementation, kv_cache=kv_cache)


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
@model_options
@handles_errors
def analyze(model, seq_len, batch, dtype, device, attn_implementation, kv_cache, fmt):
    """FLOPs and memory of every attention site, per layer and per head."""
    from .report import render

    analysis = _run_analysis(model, seq_len, batch, dtype, device, attn_implementation,
                             kv_cache, fmt)
    text = render(analysis, fmt, Console())
    if text is not None:
        click.echo(text)


@main.command()
@model_options
@click.option("--gpu", default=None, help="A GPU from `attncost specs`.")
@click.option("--memory", "memory_size", default=None, help="A budget: 24GiB, 80GB, 24G, bytes.")
@click.option("--reserve", default=None, help="Memory held back on --gpu for the CUDA context "
              "and allocator (default 1GiB).")
@click.option("--gpu-spec", "gpu_specs", multiple=True, type=click.Path(),
              help="A YAML file of more GPUs.")
@handles_errors
def fits(model, seq_len, batch, dtype, device, attn_implementation, kv_cache, fmt,
         gpu, memory_size, reserve, gpu_specs):
    """Does N fit the GPU's memory, with what headroom, and what is the largest N that does."""
    from .fits import run_fits

    if (gpu is None) == (memory_size is None):
        raise AttncostError("give exactly one of --gpu NAME or --memory SIZE")
    analysis = _run_analysis(model, seq_len, batch, dtype, device, attn_implementation,
                             kv_cache, fmt)
    code = run_fits(analysis, gpu=gpu, memory=memory_size, reserve=reserve,
                    gpu_specs=gpu_specs, fmt=fmt, console=Console())
    sys.exit(code)


@main.command()
@click.option("--gpu-spec", "gpu_specs", multiple=True, type=click.Path(),
              help="A YAML file of more GPUs.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "yaml"]), default="table")
@handles_errors
def specs(gpu_specs, fmt):
    """The GPUs attncost knows: memory, bandwidth, peak FLOP/s."""
    from .gpus import load_gpus, render_gpus

    gpus = load_gpus(gpu_specs)
    text = render_gpus(gpus, fmt, Console())
    if text is not None:
        click.echo(text)


@main.command()
@click.option("--variant", "variants", multiple=True,
              type=click.Choice(["dense", "causal_dense", "local", "sparse", "linear"]))
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default=None,
              help="Default: cuda when available, else cpu (correctness only).")
@click.option("--seq-lens", default=None, help="Comma-separated lengths, e.g. 1k,4k,16k.")
@click.option("--plot", "plot_path", type=click.Path(), default=None, help="Write a plot (png/svg).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@handles_errors
def validate(variants, device, seq_lens, plot_path, fmt):
    """Run the bundled kernels and compare measurements with the formulas."""
    import torch

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
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        from .report import render_validation

        render_validation(result, Console())
    if not all(r.get("ok", r.get("correct")) for r in result["results"]):
        sys.exit(1)


def _gpu_budgets(names, gpu_specs, reserve):
    """(GPU, bytes left for tensors) for each name, less the reserve as in `fits --gpu`."""
    from .fits import budget_for

    out = []
    for name in names:
        budget, spec = budget_for(gpu=name, reserve=reserve, gpu_specs=gpu_specs)
        out.append((spec, budget))
    return out


@main.command()
@click.argument("model", type=click.Path())
@click.option("--seq-len", "seq_range", required=True, metavar="LO..HI",
              help="The range of N to plot: 1k..1M.")
@click.option("--gpu", "gpu_names", multiple=True, help="A GPU from `attncost specs` "
              "(repeat for more): its memory as a line, the largest N that fits as a marker.")
@click.option("--attn-implementation", "attn_implementations", multiple=True,
              type=click.Choice(["eager", "sdpa", "flex_attention"]),
              help="For transformers configs; repeat for one curve each (default sdpa).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
              help="Default: float32 for a .py file, bfloat16 for a config.")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True,
              help="The device whose kernels are modelled.")
@click.option("--kv-cache/--no-kv-cache", default=None,
              help="For transformers configs (default: the config's use_cache).")
@click.option("--reserve", default=None, help="Memory held back on each --gpu for the CUDA "
              "context and allocator (default 1GiB).")
@click.option("--gpu-spec", "gpu_specs", multiple=True, type=click.Path(),
              help="A YAML file of more GPUs.")
@click.option("--points", type=click.IntRange(min=2, max=1000), default=60, show_default=True,
              help="How many lengths to evaluate the formulas at.")
@click.option("--out", "out", required=True, type=click.Path(), help="The image: .png or .svg.")
@handles_errors
def plot(model, seq_range, gpu_names, attn_implementations, batch, dtype, device, kv_cache,
         reserve, gpu_specs, points, out):
    """FLOPs and peak memory against N (log-log), one curve per attention implementation."""
    from .plot import draw, plot_data
    from .report import human_tokens

    bounds = seq_range.split("..")
    if len(bounds) != 2:
        raise AttncostError(f"--seq-len {seq_range!r}: give a range such as 1k..1M")
    lo, hi = (parse_length(x) for x in bounds)
    if hi <= lo:
        raise AttncostError(f"--seq-len {seq_range}: the end must be above the start")
    data = plot_data(model, (lo, hi), batch=batch, dtype=dtype, device=device,
                     attn_implementations=attn_implementations or (None,), kv_cache=kv_cache,
                     gpus=_gpu_budgets(gpu_names, gpu_specs, reserve), points=points)
    path = draw(data, out)
    click.echo(f"wrote {path}: {len(data.curves)} curve(s), N = {human_tokens(lo)}..{human_tokens(hi)}")
    for gpu in data.gpus:
        for label, n in gpu.max_seq_len.items():
            fits = f"up to N = {human_tokens(n)}" if n else "not even the shortest length"
            which = f" {label}" if len(data.curves) > 1 else ""
            click.echo(f"{gpu.name}:{which} fits {fits}")
    for note in data.notes:
        click.echo(note)


@main.command()
@click.argument("model", type=click.Path())
@click.option("--seq-len", "seq_len", type=LENGTH, required=True,
              help="Sequence length N: 4096, 4k, 128k, 1M.")
@click.option("--attn-implementation", "attn_implementations", multiple=True,
              type=click.Choice(["eager", "sdpa", "flex_attention"]),
              help="For transformers configs; repeat to compare (default sdpa).")
@click.option("--dtype", "dtypes", multiple=True,
              type=click.Choice(["float32", "bfloat16", "float16"]),
              help="Repeat to compare (default: float32 for a .py file, bfloat16 for a config).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True,
              help="The device whose kernels are modelled.")
@click.option("--kv-cache/--no-kv-cache", default=None,
              help="For transformers configs (default: the config's use_cache).")
@click.option("--gpu", "gpu_name", default=None,
              help="A GPU from `attncost specs`: adds the largest N that fits each choice.")
@click.option("--reserve", default=None, help="Memory held back on --gpu for the CUDA context "
              "and allocator (default 1GiB).")
@click.option("--gpu-spec", "gpu_specs", multiple=True, type=click.Path(),
              help="A YAML file of more GPUs.")
@click.option("--baseline", "baselines", multiple=True,
              type=click.Choice(["fvcore", "flopcounter"]),
              help="Count FLOPs with fvcore (a real forward; small models only) or torch's "
                   "FlopCounterMode too, per layer.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]),
              default="table", show_default=True)
@handles_errors
def compare(model, seq_len, attn_implementations, dtypes, batch, device, kv_cache, gpu_name,
            reserve, gpu_specs, baselines, fmt):
    """One model under several attention implementations or dtypes, and other FLOP counters."""
    from .compare import compare_choices, render_comparison

    gpu, budget = _gpu_budgets([gpu_name], gpu_specs, reserve)[0] if gpu_name else (None, None)
    comparison = compare_choices(model, seq_len, batch=batch, device=device,
                                 attn_implementations=attn_implementations or (None,),
                                 dtypes=dtypes or (None,), kv_cache=kv_cache,
                                 gpu=gpu, budget_bytes=budget, baselines=baselines)
    text = render_comparison(comparison, fmt, Console())
    if text is not None:
        click.echo(text)


if __name__ == "__main__":  # pragma: no cover
    main()
