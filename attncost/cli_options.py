"""The command line's options: one declaration each, shared by the commands.

Choices come from the registries they name (dtypes, devices,
implementations, variants, training modes), read when first needed, so that
building the command line imports neither torch nor sympy.
"""
from __future__ import annotations

import importlib

import click

from .errors import AttncostError
from .render import FORMATS
from .units import KV_CACHE_DTYPES, MODEL_DTYPES, WEIGHT_DTYPES, parse_length


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


class LazyChoice(click.Choice):
    """A choice read from a registry (``module:NAME``) the first time it is
    needed, so that building the command line imports no registry."""

    def __init__(self, source: str):
        self._source, self._choices = source, None
        super().__init__(())

    @property
    def choices(self) -> tuple:
        if self._choices is None:
            module, name = self._source.split(":")
            self._choices = tuple(getattr(importlib.import_module(module, __package__), name))
        return self._choices

    @choices.setter
    def choices(self, value) -> None:  # click.Choice.__init__ sets it; the registry decides
        pass


DEVICES = LazyChoice(".rules:DEVICES")
IMPLEMENTATIONS = LazyChoice(".loader:ATTN_IMPLEMENTATIONS")
BASELINE_NAMES = LazyChoice(".questions.baselines:BASELINES")
VARIANT_NAMES = LazyChoice(".kernels:VARIANTS")


def apply_options(fn, options):
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def format_option(choices=FORMATS, default="table"):
    return click.option("--format", "fmt", type=click.Choice(list(choices)), default=default,
                        show_default=True)


DTYPE = click.option("--dtype", type=click.Choice(MODEL_DTYPES), default=None,
                     help="Default: float32 for a .py file, bfloat16 for a config.")
DEVICE = click.option("--device", type=DEVICES, default="cuda", show_default=True,
                      help="The device whose kernels are modelled.")
BATCH = click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
KV_CACHE = click.option("--kv-cache/--no-kv-cache", default=None,
                        help="For transformers configs (default: the config's use_cache).")
SEQ_LEN = click.option("--seq-len", "seq_len", type=LENGTH, required=True,
                       help="Sequence length N: 4096, 4k (= 4096), 1.5k (= 1536), 128k, 1M, 1G.")
GPU_SPEC = click.option("--gpu-spec", "gpu_specs", multiple=True, type=click.Path(),
                        help="A YAML file of more GPUs.")
CALIBRATION = click.option("--calibration", type=click.Path(), default=None,
                           help="Rates measured by `attncost calibrate` (default: those shipped "
                                "for --gpu, else its datasheet).")
GPU_HELP = "A GPU from `attncost specs` (nvidia-smi's name, e.g. 'NVIDIA H100 80GB HBM3', works)"
SIZE_HELP = "GiB or G are 2^30 bytes, GB is 10^9 bytes: 80GB = 74.5 GiB"


def reserve_option(each: str = ""):
    return click.option("--reserve", default=None, help=f"Memory held back on{each} --gpu for "
                        f"the CUDA context (default: as measured for the card in `attncost "
                        f"specs`, else 1GiB; {SIZE_HELP}).")


def implementations_option(help_text: str, multiple: bool):
    dest = "attn_implementations" if multiple else "attn_implementation"
    return click.option("--attn-implementation", dest, multiple=multiple, type=IMPLEMENTATIONS,
                        default=None if not multiple else (), help=help_text)


LOGITS = click.option("--logits", "last_logits_only", type=click.Choice(["all", "last"]),
                      default="all", show_default=True, callback=lambda ctx, p, v: v == "last",
                      help="For transformers configs: logits for every position (as a forward "
                           "computes them) or the last only (logits_to_keep=1, as generation).")


WEIGHT_DTYPE = click.option("--weight-dtype", default=None, metavar="|".join(WEIGHT_DTYPES),
                            help="Count nn.Linear weights (not the LM head) quantized, with "
                                 "their scales.")
GROUP_SIZE = click.option("--group-size", type=int, default=None,
                          help="Weights per scale for int4 (default 128) and nf4 (default 64).")
KV_CACHE_DTYPE = click.option("--kv-cache-dtype", default=None, metavar="|".join(KV_CACHE_DTYPES),
                              help="For transformers configs: count the KV cache at 1 byte per "
                                   "element plus a scale per token and head.")


TRAINING_OPTIONS = [
    click.option("--mode", type=LazyChoice(".training:MODES"), default="infer", show_default=True,
                 help="infer: one forward without gradients; train: one training step "
                      "(forward + backward FLOPs, the step's peak memory)."),
    click.option("--optimizer", type=LazyChoice(".training:OPTIMIZERS"), default="adamw",
                 show_default=True, help="Train mode: whose state and step() temporaries count."),
    click.option("--mixed-precision", "mixed_precision",
                 type=LazyChoice(".training:MIXED_PRECISIONS"), default=None,
                 help="Train mode: autocast to this dtype over float32 weights."),
    click.option("--checkpointing", type=LazyChoice(".training:CHECKPOINTING"), default="none",
                 show_default=True, help="Train mode: full recomputes each layer in backward."),
    click.option("--trainable", default="all", show_default=True, metavar="all|lora:R",
                 help="Train mode: every parameter, or LoRA adapters of rank R on the "
                      "attention projections."),
    click.option("--fsdp", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Train mode: GPUs sharding parameters, gradients and optimizer state "
                      "(FSDP2, ZeRO-3); memory figures are then per GPU."),
    click.option("--tp", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Train mode: tensor-parallel GPUs (Megatron column/row split of heads "
                      "and MLP; configs only)."),
    click.option("--cp", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Train mode: context-parallel GPUs (ring attention: N/cp tokens each; "
                      "configs only)."),
]


#: Options that are keywords of ``analyze``, beyond those every command has.
ANALYSIS_OPTIONS = [LOGITS, WEIGHT_DTYPE, GROUP_SIZE, KV_CACHE_DTYPE, *TRAINING_OPTIONS]


def analysis_options(fn):
    return apply_options(fn, ANALYSIS_OPTIONS)


def model_options(formats=FORMATS):
    """Options shared by the commands that analyze one MODEL at one N.  Every
    option but MODEL, --seq-len and --format is a keyword of ``analyze``
    (same name), passed on as it is by ``_run_analysis``."""
    def wrap(fn):
        return apply_options(fn, [
            click.argument("model", type=click.Path()), SEQ_LEN, BATCH, DTYPE, DEVICE,
            implementations_option("For transformers configs (default sdpa; eager where transformers has no sdpa for the model).", multiple=False),
            KV_CACHE, *ANALYSIS_OPTIONS, format_option(formats)])
    return wrap
