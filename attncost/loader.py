"""Build the model and its example inputs from what the user points at.

A Python file (``build_model()`` or ``model``, optional ``example_inputs``) or
a transformers config.  Modules are built on the meta device, so a
70B-parameter config costs no memory: only shapes and dtypes are needed.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import ModelError
from .units import parse_dtype

ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flex_attention")


@dataclass
class LoadedModel:
    """A module (weights on the meta device) and a builder of its inputs."""

    module: torch.nn.Module
    example_inputs: Callable[[int, int], Any]
    source: str  # "file" or "config"
    path: str
    dtype: torch.dtype
    config: Any = None
    attn_implementation: str | None = None
    kv_cache: bool = False
    #: device the fake tensors claim during tracing (decides aten dispatch)
    trace_device: str = "cpu"
    #: context entered while tracing (library patches that mimic real data)
    trace_context: Callable[[], Any] = contextlib.nullcontext


def load(path: str | Path, dtype: str | torch.dtype | None = None,
         attn_implementation: str | None = None, kv_cache: bool | None = None,
         last_logits_only: bool = False) -> LoadedModel:
    """Load a Python model file or a transformers config (file or directory).

    ``last_logits_only`` (configs) computes the LM head for the last position
    only (transformers' ``logits_to_keep=1``), as generation does.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{path}: no such file or directory; give a model .py file or a "
                         "transformers config.json (or its folder)")
    if p.is_dir():
        cfg = p / "config.json"
        if not cfg.exists():
            raise ModelError(f"{path}: a directory without config.json; point at a transformers "
                             "config folder or a model .py file")
        return _load_config(cfg, str(path), dtype, attn_implementation, kv_cache, last_logits_only)
    if p.suffix == ".json":
        return _load_config(p, str(path), dtype, attn_implementation, kv_cache, last_logits_only)
    if p.suffix == ".py":
        if attn_implementation is not None:
            raise ModelError("--attn-implementation applies to transformers configs, not to a .py file")
        if kv_cache is not None:
            raise ModelError("--kv-cache/--no-kv-cache applies to transformers configs, not to a "
                             ".py file: return the cache from forward() to count it")
        return _load_python(p, str(path), dtype)
    raise ModelError(f"{path}: expected a .py model file or a transformers config.json")


# ---------------------------------------------------------------- Python files


def import_file(p: Path):
    name = f"attncost_user_{p.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise ModelError(f"{p}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered so that code that re-imports it (torch.compile inside
    # FlexAttention, pickling) finds it.
    sys.modules[name] = module
    folder = str(p.resolve().parent)
    sys.path.insert(0, folder)
    sys.dont_write_bytecode, old = True, sys.dont_write_bytecode
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ModelError(f"{p}:{exc.lineno}: syntax error: {exc.msg}") from exc
    except Exception as exc:
        raise ModelError(f"{p}: importing it raised {type(exc).__name__}: {exc}") from exc
    finally:
        sys.dont_write_bytecode = old
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
    return module


@contextlib.contextmanager
def parameters_on_meta():
    """Build modules with their parameters on the meta device (no memory, and
    their initialisation costs nothing) while buffers keep their data: masks
    are often precomputed into buffers (a causal ``tril``), and attncost reads
    them to tell causal, windowed and sparse attention apart."""
    original = torch.nn.Module.register_parameter

    def register(self, name, param):
        if param is not None and param.device.type != "meta":
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(self, name, param)

    torch.nn.Module.register_parameter = register
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original


def _move_parameters_to_meta(model: torch.nn.Module) -> None:
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            module._parameters[name] = torch.nn.Parameter(param.to("meta"),
                                                          requires_grad=param.requires_grad)


def _load_python(p: Path, given: str, dtype) -> LoadedModel:
    module = import_file(p)
    dt = parse_dtype(dtype, torch.float32)
    builder = getattr(module, "build_model", None)
    try:
        with parameters_on_meta():
            if callable(builder):
                model = builder()
            elif isinstance(getattr(module, "model", None), torch.nn.Module):
                model = module.model
                _move_parameters_to_meta(model)
            else:
                raise ModelError(f"{given}: defines neither build_model() nor a module-level "
                                 "`model` (an nn.Module); add one of them")
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{given}: build_model() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"{given}: build_model() returned {type(model).__name__}, not an nn.Module")
    model = model.to(dtype=dt).eval()

    user_inputs = getattr(module, "example_inputs", None)
    if callable(user_inputs):
        def example_inputs(seq_len: int, batch: int):
            with torch.device("cpu"):
                try:
                    out = user_inputs(seq_len, batch=batch)
                except TypeError:
                    out = user_inputs(seq_len)
            return _cast_floats(out, dt)
    else:
        emb = next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)
        if emb is None:
            raise ModelError(f"{given}: the model does not start with an nn.Embedding, so attncost "
                             "cannot guess its inputs; define example_inputs(seq_len, batch=1)")

        def example_inputs(seq_len: int, batch: int):
            return (torch.zeros(batch, seq_len, dtype=torch.long),)
    return LoadedModel(model, example_inputs, "file", given, dt)


def _cast_floats(obj, dtype):
    """Floating inputs follow --dtype, as the model's weights do."""
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, tuple):
        return tuple(_cast_floats(o, dtype) for o in obj)
    if isinstance(obj, list):
        return [_cast_floats(o, dtype) for o in obj]
    if isinstance(obj, dict):
        return {k: _cast_floats(v, dtype) for k, v in obj.items()}
    return obj


# ------------------------------------------------------------ transformers


def _load_config(cfg_path: Path, given: str, dtype, attn_implementation, kv_cache,
                 last_logits_only: bool = False) -> LoadedModel:
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{cfg_path}: malformed JSON at line {exc.lineno}: {exc.msg}") from exc
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise ModelError(f"{cfg_path}: not a transformers config (no \"model_type\" field)")
    try:
        import transformers
    except ImportError as exc:
        raise ModelError("reading a transformers config needs transformers: "
                         "pip install 'attncost[hf]'") from exc
    # Config sanity warnings (token ids outside a small test vocabulary) are noise here.
    transformers.logging.set_verbosity_error()
    impl = attn_implementation or "sdpa"
    if impl not in ATTN_IMPLEMENTATIONS:
        raise ModelError(f"unknown attention implementation {impl!r}: use one of "
                         f"{', '.join(ATTN_IMPLEMENTATIONS)}")
    try:
        config = transformers.AutoConfig.for_model(**raw)
    except Exception as exc:
        raise ModelError(f"{cfg_path}: transformers cannot read this config: {exc}") from exc
    dt = parse_dtype(dtype, torch.bfloat16)
    use_cache = bool(getattr(config, "use_cache", False)) if kv_cache is None else bool(kv_cache)
    model = _build_hf(config, impl, dt, cfg_path)

    def example_inputs(seq_len: int, batch: int):
        inputs = {"input_ids": torch.zeros(batch, seq_len, dtype=torch.long), "use_cache": use_cache}
        if last_logits_only:
            inputs["logits_to_keep"] = 1
        return inputs

    return LoadedModel(model, example_inputs, "config", given, dt, config=config,
                       attn_implementation=impl, kv_cache=use_cache,
                       trace_context=_unpacked_sequences)


@contextlib.contextmanager
def _unpacked_sequences():
    """Tell transformers' mask code what real data would tell it.

    On real ids, transformers checks the position ids for packed sequences,
    finds none and lets SDPA run its causal kernel with no mask.  On fake
    tensors it cannot read the data and builds an explicit N x N mask that a
    real run never allocates.  attncost's inputs are one unpadded sequence per
    row, so the answer on real data is known: no packing.
    """
    try:
        from transformers import masking_utils
    except ImportError:
        yield
        return
    original = getattr(masking_utils, "find_packed_sequence_indices", None)
    if original is None:
        yield
        return
    masking_utils.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        masking_utils.find_packed_sequence_indices = original


def _build_hf(config, impl: str, dtype: torch.dtype, cfg_path: Path) -> torch.nn.Module:
    import transformers

    archs = list(getattr(config, "architectures", None) or [])
    classes = []
    for name in archs:
        cls = getattr(transformers, name, None)
        if cls is not None:
            classes.append(cls)
    auto = [transformers.AutoModelForCausalLM, transformers.AutoModel]
    last_exc: Exception | None = None
    for cls in classes + auto:
        try:
            with torch.device("meta"):
                if cls in auto:
                    model = cls.from_config(config, attn_implementation=impl, dtype=dtype)
                else:
                    config._attn_implementation = impl
                    model = cls(config).to(dtype)
            return model.eval()
        except Exception as exc:  # try the next class
            last_exc = exc
            continue
    raise ModelError(f"{cfg_path}: transformers could not build a model from this config "
                     f"with attn_implementation={impl}: {last_exc}")
