"""GPU specifications (specs/gpus.yaml) and memory sizes as people write them.

A GPU is its memory capacity, its memory bandwidth and its dense peak FLOP/s
per dtype, each from the vendor's datasheet; users add GPUs with YAML files of
the same layout.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

from .errors import AttncostError, SpecError

SPEC_PATH = Path(__file__).resolve().parent / "specs" / "gpus.yaml"

#: Held back from a GPU's capacity by `attncost fits --gpu`: the CUDA context
#: (300-600 MiB on current drivers, never seen by the caching allocator), the
#: cuBLAS/cuDNN workspaces, memory the driver keeps for ECC and firmware, and
#: the caching allocator's rounding and fragmentation.  1 GiB covers these on
#: an inference process that runs one model; `--reserve SIZE` changes it.
DEFAULT_RESERVE = 1 << 30

DTYPE_KEYS = ("float32", "tf32", "bfloat16", "float16")
_DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16",
                  "fp16": "float16", "half": "float16"}


@dataclass(frozen=True)
class GPU:
    """One GPU: capacity (bytes), bandwidth (bytes/s), dense peak FLOP/s per dtype."""

    name: str
    memory_bytes: int
    memory_bandwidth: float
    peak_flops: dict[str, float]
    datasheet: str = ""
    aliases: tuple[str, ...] = ()
    source: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    def flops_for(self, dtype) -> float:
        """Dense peak FLOP/s for a dtype name or torch.dtype."""
        key = dtype_key(dtype)
        if key not in self.peak_flops:
            raise SpecError(f"{self.name}: no peak FLOP/s for {key} (it has "
                            f"{', '.join(self.peak_flops)})")
        return self.peak_flops[key]

    def to_dict(self) -> dict:
        return {"name": self.name, "memory_bytes": self.memory_bytes,
                "memory_bandwidth": self.memory_bandwidth,
                "peak_flops": dict(self.peak_flops), "datasheet": self.datasheet,
                "aliases": list(self.aliases)}


def dtype_key(dtype) -> str:
    """'bfloat16' for torch.bfloat16, 'bf16' or 'bfloat16'."""
    name = str(dtype).replace("torch.", "").lower()
    return _DTYPE_ALIASES.get(name, name)


# ------------------------------------------------------------------ sizes

_BINARY = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DECIMAL = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgtp])(i?)(b?)|(b?))\s*", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes from '24GiB' (binary), '80GB' (decimal), '24G' (= GiB), '123456' or '512B'."""
    if isinstance(text, bool):
        raise AttncostError(f"{text!r} is not a memory size")
    if isinstance(text, int):
        if text <= 0:
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
    if value <= 0:
        raise AttncostError(f"a memory size must be positive, not {text!r}")
    return value


_RATE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kMGTP]?)\s*"
                   r"(B/s|FLOPS|FLOP/s)?\s*")


def _parse_rate(value, unit: str) -> float:
    """A decimal rate: 3.35e12, '3.35 TB/s', '989.5 TFLOPS'."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return float(value)
    m = _RATE.fullmatch(str(value))
    if not m or (m.group(3) and m.group(3).split("/")[0].rstrip("S") != unit):
        raise ValueError(value)
    return float(m.group(1)) * _DECIMAL[m.group(2).lower()]


# ------------------------------------------------------------------ specs


def _gpu_from(name: str, spec, path: str) -> GPU:
    def bad(what: str) -> SpecError:
        return SpecError(f"{path}: GPU {name!r}: {what}")

    if not isinstance(spec, dict):
        raise bad("expected a mapping of memory, memory_bandwidth and peak_flops")
    for key in ("memory", "memory_bandwidth", "peak_flops"):
        if key not in spec:
            raise bad(f"missing {key!r}")
    try:
        memory = parse_size(spec["memory"])
    except AttncostError:
        raise bad(f"memory {spec['memory']!r} is not a size such as 80GiB") from None
    try:
        bandwidth = _parse_rate(spec["memory_bandwidth"], "B")
    except ValueError:
        raise bad(f"memory_bandwidth {spec['memory_bandwidth']!r} is not a rate such as "
                  "'3.35 TB/s'") from None
    flops_spec = spec["peak_flops"]
    if not isinstance(flops_spec, dict) or not flops_spec:
        raise bad("peak_flops must map dtypes (float32, tf32, bfloat16, float16) to FLOP/s")
    flops = {}
    for dtype, value in flops_spec.items():
        key = dtype_key(dtype)
        try:
            flops[key] = _parse_rate(value, "FLOP")
        except ValueError:
            raise bad(f"peak_flops.{dtype} {value!r} is not a rate such as '989.5 TFLOPS'") from None
        if flops[key] <= 0:
            raise bad(f"peak_flops.{dtype} must be positive")
    if bandwidth <= 0:
        raise bad("memory_bandwidth must be positive")
    aliases = spec.get("aliases") or []
    if not isinstance(aliases, list):
        raise bad("aliases must be a list of names")
    return GPU(name=str(name), memory_bytes=memory, memory_bandwidth=bandwidth,
               peak_flops=flops, datasheet=str(spec.get("datasheet", "")),
               aliases=tuple(str(a) for a in aliases), source=path)


def _read_file(path: str | Path) -> dict[str, GPU]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the GPU spec file ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise SpecError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), dict):
        raise SpecError(f"{path}: expected a top-level 'gpus:' mapping of GPU names to specs")
    return {str(name): _gpu_from(str(name), spec, str(path)) for name, spec in data["gpus"].items()}


def load_gpus(extra_files: Iterable[str | Path] = ()) -> dict[str, GPU]:
    """The bundled GPUs, then those of ``extra_files`` (same name replaces)."""
    gpus = dict(_read_file(SPEC_PATH))
    for path in extra_files or ():
        gpus.update(_read_file(path))
    return gpus


def _normal(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name)).lower()


def get_gpu(name: str, extra_files: Iterable[str | Path] = ()) -> GPU:
    """A GPU by name or alias, ignoring case, spaces, '-' and '_'."""
    gpus = load_gpus(extra_files)
    wanted = _normal(name)
    for gpu in gpus.values():
        if _normal(gpu.name) == wanted:
            return gpu
    for gpu in reversed(list(gpus.values())):  # user files' aliases first
        if any(_normal(a) == wanted for a in gpu.aliases):
            return gpu
    raise SpecError(f"unknown GPU {name!r}: known GPUs are {', '.join(gpus)} "
                    "(add one with --gpu-spec FILE)")


# --------------------------------------------------------------- display


def render_gpus(gpus: dict[str, GPU], fmt: str = "table", console=None) -> str | None:
    """The GPUs as JSON or YAML text, or a table printed to ``console``."""
    rows = [g.to_dict() for g in gpus.values()]
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "yaml":
        return yaml.safe_dump(rows, sort_keys=False)
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="GPUs (dense peak FLOP/s from datasheets)")
    for col in ("GPU", "memory", "bandwidth", *DTYPE_KEYS):
        table.add_column(col, justify="left" if col == "GPU" else "right")
    for g in gpus.values():
        table.add_row(g.name, f"{g.memory_bytes / (1 << 30):g} GiB",
                      f"{g.memory_bandwidth / 1e12:.3g} TB/s",
                      *[f"{g.peak_flops[k] / 1e12:g} T" if k in g.peak_flops else "-"
                        for k in DTYPE_KEYS])
    console.print(table)
    return None
