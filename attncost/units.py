"""Units as people write and read them: lengths, sizes, rates, dtypes.

Parsing ("128k", "24GiB", "3.35 TB/s", "bf16") and printing ("4.85 GiB",
"194 TFLOP", "32k") live here, with the one table of dtypes.  Importing this
module does not import torch (the command line starts without it); torch's
dtypes are looked up when first asked for.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from fractions import Fraction

from .errors import AttncostError

# ------------------------------------------------------------------ dtypes


@dataclass(frozen=True)
class DType:
    """One dtype: the name attncost's options and JSON use, torch's dtype,
    the short name printed beside a tensor, and the other names it answers to."""

    name: str
    #: the attribute of ``torch`` (None: torch has no such dtype)
    torch_name: str | None
    short: str
    aliases: tuple[str, ...] = ()
    #: bits per element (a quantized format's bits, before its scales)
    bits: int | None = None

    @property
    def torch(self):
        """torch's dtype (imports torch)."""
        if self.torch_name is None:
            return None
        import torch

        return getattr(torch, self.torch_name)


#: Every dtype attncost names.  ``MODEL_DTYPES`` are those a model can be run in.
DTYPE_TABLE = (
    DType("float32", "float32", "fp32", ("fp32", "float"), bits=32),
    DType("bfloat16", "bfloat16", "bf16", ("bf16",), bits=16),
    DType("float16", "float16", "fp16", ("fp16", "half"), bits=16),
    DType("tf32", None, "tf32"),
    DType("float64", "float64", "fp64", ("fp64", "double"), bits=64),
    DType("int64", "int64", "int64", ("long",), bits=64),
    DType("int32", "int32", "int32", ("int",), bits=32),
    DType("int8", "int8", "int8", bits=8),
    DType("uint8", "uint8", "uint8", bits=8),
    DType("bool", "bool", "bool", bits=8),
    # Quantized storage formats: weights and KV caches (memory/quantized.py
    # adds their scales).  fp8 is e4m3, the format fp8 weights and caches use.
    DType("fp8_e4m3", "float8_e4m3fn", "fp8", ("fp8", "float8_e4m3fn", "e4m3"), bits=8),
    DType("int4", None, "int4", bits=4),
    DType("nf4", None, "nf4", bits=4),
)
MODEL_DTYPES = ("float32", "bfloat16", "float16")
#: The dtypes a GPU spec gives a dense peak FLOP/s for.
PEAK_FLOPS_DTYPES = ("float32", "tf32", "bfloat16", "float16")
#: What ``--weight-dtype`` and ``--kv-cache-dtype`` accept.
WEIGHT_DTYPES = ("int8", "fp8_e4m3", "int4", "nf4")
KV_CACHE_DTYPES = ("fp8", "int8")

_BY_NAME = {d.name: d for d in DTYPE_TABLE} | {a: d for d in DTYPE_TABLE for a in d.aliases}
_BY_TORCH: dict = {}


def _torch_dtype_entry(dtype):
    """The DType of a torch.dtype; None if ``dtype`` is not one (torch is
    never imported here: a torch.dtype exists only once torch is)."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(dtype, torch.dtype):
        return None
    if not _BY_TORCH:
        _BY_TORCH.update({d.torch: d for d in DTYPE_TABLE if d.torch_name is not None})
    return _BY_TORCH.get(dtype, False)


def dtype_name(dtype) -> str:
    """'bfloat16' for torch.bfloat16, 'bf16' or 'bfloat16'; unknown names pass through."""
    known = _torch_dtype_entry(dtype)
    if known is not None:
        return known.name if known else str(dtype).replace("torch.", "")
    name = str(dtype).replace("torch.", "").lower()
    known = _BY_NAME.get(name)
    return known.name if known else name


def short_dtype(dtype) -> str:
    """'bf16' for torch.bfloat16: how a tensor's dtype is printed."""
    known = _torch_dtype_entry(dtype)
    return known.short if known else str(dtype).replace("torch.", "")


def dtype_bits(name) -> int:
    """Bits per element of a dtype in the table ('nf4' -> 4, 'fp8' -> 8)."""
    known = _BY_NAME.get(dtype_name(name))
    if known is None or known.bits is None:
        raise AttncostError(f"no size known for dtype {name!r}")
    return known.bits


def parse_dtype(name, default):
    """A model dtype (a torch.dtype) from an option value (None: ``default``)."""
    if name is None:
        return default
    if _torch_dtype_entry(name) is not None:
        return name
    if dtype_name(name) not in MODEL_DTYPES:
        raise AttncostError(f"unknown dtype {name!r}: use one of {', '.join(MODEL_DTYPES)}")
    return _BY_NAME[dtype_name(name)].torch

# ---------------------------------------------------------------- lengths

_LENGTH_SUFFIX = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_LENGTH = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgG]?)\s*")


def parse_length(text) -> int:
    """4096, 4k (= 4096), 1.5k (= 1536), 128k, 1M (= 1048576), 1G (= 2**30).
    A length is a whole number of tokens: 1.3k (1331.2) is refused."""
    m = _LENGTH.fullmatch(str(text))
    if not m:
        raise AttncostError(f"--seq-len {text!r} is not a length: use a positive integer "
                            "or a suffix such as 4k, 1.5k, 128k, 1M, 1G")
    value = Fraction(m.group(1)) * _LENGTH_SUFFIX[m.group(2).lower()]
    if value.denominator != 1:
        below, above = int(value), int(value) + 1
        raise AttncostError(f"--seq-len {str(text).strip()} is {float(value):g} tokens, not a "
                            f"whole number: write {below} or {above}")
    if value <= 0:
        raise AttncostError(f"--seq-len must be positive, not {text}")
    return int(value)

# ------------------------------------------------------------------ sizes

_BINARY = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DECIMAL = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgtp])(i?)(b?)|(b?))\s*", re.IGNORECASE)


def parse_size(text, allow_zero: bool = False) -> int:
    """Bytes from '24GiB' (binary), '80GB' (decimal), '24G' (= GiB), '123456' or '512B'."""
    if isinstance(text, bool):
        raise AttncostError(f"{text!r} is not a memory size")
    if isinstance(text, int):
        if text < 0 or (text == 0 and not allow_zero):
            raise AttncostError(f"a memory size must be positive, not {text}")
        return text
    m = _SIZE.fullmatch(str(text))
    if not m:
        raise AttncostError(f"{text!r} is not a memory size: write 24GiB, 80GB, 24G (= GiB) "
                            "or a number of bytes")
    number, prefix, binary, bytes_unit = m.group(1), (m.group(2) or "").lower(), m.group(3), m.group(4)
    if prefix and not binary and bytes_unit:
        scale = _DECIMAL[prefix]  # GB, MB: decimal, as vendors write them
    else:
        scale = _BINARY[prefix]   # GiB, G, bare numbers
    value = round(float(number) * scale)
    if value < 0 or (value == 0 and not allow_zero):
        raise AttncostError(f"a memory size must be positive, not {text!r}")
    return value


#: A bare number below this is taken for a slip (``--memory 80`` meant GiB, not bytes).
MIN_BARE_BUDGET = 1 << 20


def parse_budget(text, option: str = "--memory") -> int:
    """A memory budget: as ``parse_size``, but a bare number under 1 MiB is
    refused, since ``--memory 80`` is far more likely 80 GiB than 80 bytes."""
    value = parse_size(text)
    if not isinstance(text, int) and re.fullmatch(r"\s*[\d.]+\s*", str(text)) \
            and value < MIN_BARE_BUDGET:
        number = str(text).strip()
        raise AttncostError(f"{option} {number} is {value} bytes: give a unit, e.g. "
                            f"{number}GiB (binary) or {number}GB (decimal)")
    return value


_RATE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kMGTP]?)\s*"
                   r"(B/s|FLOPS|FLOP/s)?\s*")


def parse_rate(value, unit: str) -> float:
    """A decimal rate: 3.35e12, '3.35 TB/s', '989.5 TFLOPS' (ValueError if not)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return float(value)
    m = _RATE.fullmatch(str(value))
    if not m or (m.group(3) and m.group(3).split("/")[0].rstrip("S") != unit):
        raise ValueError(value)
    return float(m.group(1)) * _DECIMAL[m.group(2).lower()]

# --------------------------------------------------------------- printing


def human_flops(x: int | float) -> str:
    return _scaled(x, ["FLOP", "kFLOP", "MFLOP", "GFLOP", "TFLOP", "PFLOP", "EFLOP", "ZFLOP"], 1000)


def human_bytes(x: int | float) -> str:
    return _scaled(x, ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"], 1024)


def human_seconds(x: float) -> str:
    """0.00042 -> 420 µs, 0.15 -> 150 ms, 42.0 -> 42 s, 200.0 -> 3.33 min,
    20000.0 -> 5.56 h: three significant digits, never an exponent."""
    for unit, scale in (("h", 3600.0), ("min", 60.0), ("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if x >= scale:
            return f"{_digits(x / scale)} {unit}"
    return f"{_digits(x * 1e9)} ns"


def human_rate(x: float, unit: str) -> str:
    """12345.6 tokens/s -> '12.3k tokens/s', 0.25 -> '0.25 tokens/s'."""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{_digits(x / scale)}{prefix} {unit}"
    return f"{_digits(x)} {unit}"


def _digits(x: float) -> str:
    """Three significant digits without an exponent: 0.0123, 4.56, 789, 12,345."""
    return f"{x:.3g}" if x < 100 else f"{x:,.0f}"


def human_tokens(n: int) -> str:
    """4096 -> 4k, 131072 -> 128k, 1048576 -> 1M (as --seq-len reads them);
    other values, and multiples too long to read at a glance (35816k), with
    separators."""
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("k", 1 << 10)):
        if n >= size and n % size == 0 and n // size < 10_000:
            return f"{n // size}{unit}"
    return f"{n:,}"


def _scaled(x, units, base) -> str:
    x = float(x)
    i = 0
    while abs(x) >= base and i < len(units) - 1:
        x /= base
        i += 1
    if i == 0:
        return f"{int(x)} {units[0]}"
    return f"{x:.3g} {units[i]}" if x < 100 else f"{x:.0f} {units[i]}"
