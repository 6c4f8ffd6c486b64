"""GPU specifications (specs/gpus.yaml) and memory sizes as people write them.

A GPU is its memory capacity, its memory bandwidth and its dense peak FLOP/s
per dtype, each from the vendor's datasheet; users add GPUs with YAML files of
the same layout.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import yaml

from .errors import AttncostError, SpecError
from .units import dtype_name, parse_rate, parse_size

SPEC_PATH = Path(__file__).resolve().parent / "specs" / "gpus.yaml"

#: Held back from a GPU's capacity by `attncost fits --gpu`: the CUDA context
#: (300-600 MiB on current drivers, never seen by the caching allocator), the
#: cuBLAS/cuDNN workspaces, memory the driver keeps for ECC and firmware, and
#: the caching allocator's rounding and fragmentation.  1 GiB covers these on
#: an inference process that runs one model; `--reserve SIZE` changes it.
DEFAULT_RESERVE = 1 << 30

@dataclass(frozen=True)
class GPU:
    """One GPU: capacity (bytes), bandwidth (bytes/s), dense peak FLOP/s per dtype."""

    name: str
    memory_bytes: int
    memory_bandwidth: float
    peak_flops: dict[str, float]
    datasheet: str = ""
    aliases: tuple[str, ...] = ()
    #: device memory a process loses to the CUDA context before the caching
    #: allocator reserves anything (total - free after CUDA initialises), as
    #: measured on the card; None where nobody has measured it
    cuda_context_bytes: int | None = None
    #: where ``cuda_context_bytes`` was measured (card, driver, torch, date)
    cuda_context_source: str = ""

    def held_back(self) -> int:
        """What `fits --gpu` takes from the capacity: the measured CUDA context,
        or DEFAULT_RESERVE where none was measured."""
        return DEFAULT_RESERVE if self.cuda_context_bytes is None else self.cuda_context_bytes

    def flops_for(self, dtype) -> float:
        """Dense peak FLOP/s for a dtype name or torch.dtype."""
        key = dtype_name(dtype)
        if key not in self.peak_flops:
            raise SpecError(f"{self.name}: no peak FLOP/s for {key} (it has "
                            f"{', '.join(self.peak_flops)})")
        return self.peak_flops[key]

    def to_dict(self) -> dict:
        return {"name": self.name, "memory_bytes": self.memory_bytes,
                "memory_bandwidth": self.memory_bandwidth,
                "peak_flops": dict(self.peak_flops), "datasheet": self.datasheet,
                "aliases": list(self.aliases)}


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
        bandwidth = parse_rate(spec["memory_bandwidth"], "B")
    except ValueError:
        raise bad(f"memory_bandwidth {spec['memory_bandwidth']!r} is not a rate such as "
                  "'3.35 TB/s'") from None
    flops_spec = spec["peak_flops"]
    if not isinstance(flops_spec, dict) or not flops_spec:
        raise bad("peak_flops must map dtypes (float32, tf32, bfloat16, float16) to FLOP/s")
    flops = {}
    for dtype, value in flops_spec.items():
        key = dtype_name(dtype)
        try:
            flops[key] = parse_rate(value, "FLOP")
        except ValueError:
            raise bad(f"peak_flops.{dtype} {value!r} is not a rate such as '989.5 TFLOPS'") from None
        if flops[key] <= 0:
            raise bad(f"peak_flops.{dtype} must be positive")
    if bandwidth <= 0:
        raise bad("memory_bandwidth must be positive")
    aliases = spec.get("aliases") or []
    if not isinstance(aliases, list):
        raise bad("aliases must be a list of names")
    context = _cuda_context(spec, bad)
    return GPU(name=str(name), memory_bytes=memory, memory_bandwidth=bandwidth,
               peak_flops=flops, datasheet=str(spec.get("datasheet", "")),
               aliases=tuple(str(a) for a in aliases), cuda_context_bytes=context,
               cuda_context_source=str(spec.get("cuda_context_source", "")))


def _cuda_context(spec: dict, bad) -> int | None:
    """The optional measured CUDA context; a figure needs its source."""
    if "cuda_context" not in spec:
        return None
    try:
        context = parse_size(spec["cuda_context"], allow_zero=True)
    except AttncostError:
        raise bad(f"cuda_context {spec['cuda_context']!r} is not a size such as 520MiB") from None
    if not spec.get("cuda_context_source"):
        raise bad("cuda_context needs cuda_context_source: the card, driver and torch it was "
                  "measured with")
    return context


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


#: Words in a GPU's name that do not tell GPUs apart: vendor and product
#: lines, memory types, form factors nvidia-smi prints ("NVIDIA H100 80GB HBM3").
_NOISE_WORDS = {"nvidia", "amd", "geforce", "tesla", "instinct", "radeon", "tensor", "core",
                "gpu", "hbm", "hbm2", "hbm2e", "hbm3", "hbm3e", "gddr6", "gddr6x", "gddr7"}


def _normal(name: str) -> str:
    """A name as compared: lower case, no separators, no vendor or memory-type
    words, a memory size written one way ('80G', '80GiB' and '80GB' are '80gb')."""
    words = [w for w in re.split(r"[\s_\-]+", str(name).lower()) if w]
    out = []
    for word in words:
        if word in _NOISE_WORDS:
            continue
        size = re.fullmatch(r"(\d+)(?:g|gb|gib)", word)
        out.append(f"{size.group(1)}gb" if size else word)
    return "".join(out)


def _names(gpus: dict[str, GPU]) -> dict[str, GPU]:
    """Every normalised name and alias -> its GPU (a user file's aliases win)."""
    out: dict[str, GPU] = {}
    for gpu in gpus.values():
        for alias in gpu.aliases:
            out[_normal(alias)] = gpu
    for gpu in gpus.values():
        out[_normal(gpu.name)] = gpu
    return out


def get_gpu(name: str, extra_files: Iterable[str | Path] = ()) -> GPU:
    """A GPU by name or alias, ignoring case, spaces, '-', '_', vendor words
    and how a memory size is written: 'H100-SXM', 'NVIDIA H100 80GB HBM3',
    'H100-80G' are one GPU."""
    gpus = load_gpus(extra_files)
    by_name = _names(gpus)
    wanted = _normal(name)
    if wanted in by_name:
        return by_name[wanted]
    raise SpecError(f"unknown GPU {name!r}{_did_you_mean(wanted, by_name)} "
                    "(`attncost specs` lists the GPUs; --gpu-spec FILE adds one)")


def _did_you_mean(wanted: str, by_name: dict[str, GPU]) -> str:
    """': did you mean H100-SXM?' from the closest names, or nothing."""
    close = difflib.get_close_matches(wanted, list(by_name), n=6, cutoff=0.6)
    names = list(dict.fromkeys(by_name[c].name for c in close))[:3]
    if not names:
        return ""
    return ": did you mean " + " or ".join(names) + "?"
