"""Build the model and its example inputs from what the user points at.

A Python file (``build_model()`` or ``model``, optional ``example_inputs``) or
a transformers config.  Modules are built on the meta device, so a
70B-parameter config costs no memory: only shapes and dtypes are needed.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import ModelError, first_line
from .units import parse_dtype

#: Attention implementations of a transformers config.  ``flash_attention_2``
#: is modelled (flash-attn is CUDA-only): aten's flash kernel, no mask, the
#: causal flag and the sliding window as transformers hands them to flash-attn.
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flex_attention", "flash_attention_2")
FLASH_ATTENTION_2 = "flash_attention_2"


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
    #: one-line remarks for the report (what N means, defaults a config relies on)
    notes: list[str] = field(default_factory=list)


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


def _inside(module, folder: Path) -> bool:
    file = getattr(module, "__file__", None)
    if not file:
        paths = list(getattr(module, "__path__", []) or [])
        file = paths[0] if paths else None
    try:
        return bool(file) and Path(file).resolve().is_relative_to(folder)
    except (OSError, ValueError):
        return False


def _provided_names(folder: Path) -> set[str]:
    """Top-level module names the folder provides (files and packages)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return set()
    return {e.stem for e in entries if e.suffix == ".py"} | {e.name for e in entries if e.is_dir()}


@contextlib.contextmanager
def _importable(folder: Path, keep: str = "") -> Any:
    """``folder`` importable, and its modules its own: a module of the same
    name loaded earlier (another model's ``helper.py``) is hidden meanwhile,
    and what was imported from the folder is forgotten afterwards, so the
    next model file that imports a sibling ``helper`` gets its own."""
    folder = folder.resolve()
    hidden = {name: sys.modules.pop(name) for name in _provided_names(folder)
              if name in sys.modules and not _inside(sys.modules[name], folder)}
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        try:
            sys.path.remove(str(folder))
        except ValueError:
            pass
        for name in set(sys.modules) - before:
            if name != keep and _inside(sys.modules[name], folder):
                del sys.modules[name]
        sys.modules.update(hidden)


def import_file(p: Path):
    name = f"attncost_user_{p.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise ModelError(f"{p}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered so that code that re-imports it (torch.compile inside
    # FlexAttention, pickling) finds it.
    sys.modules[name] = module
    sys.dont_write_bytecode, old = True, sys.dont_write_bytecode
    try:
        with _importable(p.parent, keep=name):
            spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ModelError(f"{p}:{exc.lineno}: syntax error: {exc.msg}") from exc
    except ImportError as exc:
        if "relative import" not in str(exc):
            raise ModelError(f"{p}: importing it raised {type(exc).__name__}: {exc}") from exc
        return _import_in_package(p, exc)
    except Exception as exc:
        raise ModelError(f"{p}: importing it raised {type(exc).__name__}: {exc}") from exc
    finally:
        sys.dont_write_bytecode = old
    return module


def _import_in_package(p: Path, cause: ImportError):
    """A file with relative imports, imported as a module of its folder's
    package (``pkg/model.py`` as ``pkg.model``)."""
    folder = p.resolve().parent
    qualified = f"{folder.name}.{p.stem}"
    sys.dont_write_bytecode, old = True, sys.dont_write_bytecode
    try:
        with _importable(folder.parent, keep=qualified):
            return importlib.import_module(qualified)
    except Exception as exc:  # noqa: BLE001 - any failure gets the advice below
        raise ModelError(
            f"{p}: uses relative imports ({first_line(cause)}) and cannot be imported as "
            f"{qualified} ({type(exc).__name__}: {first_line(exc)}); point attncost at a file "
            f"outside the package that imports it absolutely, e.g. `from {qualified} import "
            "build_model, example_inputs`") from exc
    finally:
        sys.dont_write_bytecode = old


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


def _build_from_file(module, p: Path, given: str) -> torch.nn.Module:
    builder = getattr(module, "build_model", None)
    try:
        with parameters_on_meta(), _importable(p.parent):
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
    return model


def _batch_argument(fn: Callable) -> str | None:
    """How ``example_inputs`` takes the batch: "keyword" (``batch=``),
    "positional" (a second argument of another name) or None (it takes none)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return "keyword"
    kinds = inspect.Parameter
    if any(q.name == "batch" or q.kind is kinds.VAR_KEYWORD for q in params):
        return "keyword"
    positional = [q for q in params if q.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 2 or any(q.kind is kinds.VAR_POSITIONAL for q in params):
        return "positional"
    return None


def _load_python(p: Path, given: str, dtype) -> LoadedModel:
    module = import_file(p)
    dt = parse_dtype(dtype, torch.float32)
    model = _build_from_file(module, p, given).to(dtype=dt).eval()
    notes: list[str] = []
    user_inputs = getattr(module, "example_inputs", None)
    if callable(user_inputs):
        how = _batch_argument(user_inputs)
        if how is None:
            notes.append("example_inputs(seq_len) takes no batch: the batch is what it builds")

        def example_inputs(seq_len: int, batch: int):
            with torch.device("cpu"):
                if how == "keyword":
                    out = user_inputs(seq_len, batch=batch)
                else:
                    out = user_inputs(seq_len, batch) if how else user_inputs(seq_len)
            return _cast_floats(out, dt)
    else:
        emb = next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)
        if emb is None:
            raise ModelError(f"{given}: the model does not start with an nn.Embedding, so attncost "
                             "cannot guess its inputs; define example_inputs(seq_len, batch=1)")

        def example_inputs(seq_len: int, batch: int):
            return (torch.zeros(batch, seq_len, dtype=torch.long),)
    return LoadedModel(model, example_inputs, "file", given, dt, notes=notes)


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


def _read_config(cfg_path: Path) -> dict:
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{cfg_path}: malformed JSON at line {exc.lineno}: {exc.msg}") from exc
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise ModelError(f"{cfg_path}: not a transformers config (no \"model_type\" field)")
    return raw


def _config_of(raw: dict, cfg_path: Path):
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    kind = raw["model_type"]
    if kind not in CONFIG_MAPPING:
        close = difflib.get_close_matches(str(kind), list(CONFIG_MAPPING.keys()), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"{cfg_path}: transformers {transformers.__version__} knows no "
                         f"model_type {kind!r}{hint}")
    try:
        return transformers.AutoConfig.for_model(**raw)
    except Exception as exc:
        raise ModelError(f"{cfg_path}: transformers cannot read this config: "
                         f"{type(exc).__name__}: {first_line(exc)}") from exc


#: Sizes a config that means a real model sets; one that sets none of them
#: is transformers' default model of that type.
_SIZE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def _defaults_note(raw: dict, config) -> list[str]:
    """A note when the config leaves the model's sizes to transformers' defaults."""
    if getattr(config, "sub_configs", None):
        return []
    aliases = getattr(config, "attribute_map", {}) or {}
    given = set(raw) | {std for std, real in aliases.items() if real in raw}
    missing = [f for f in _SIZE_FIELDS if f not in given and getattr(config, f, None) is not None]
    if not missing or ("hidden_size" not in missing and "num_hidden_layers" not in missing):
        return []
    values = ", ".join(f"{f}={getattr(config, f)}" for f in missing)
    return [f"config.json sets no {', '.join(missing)}: transformers' defaults for "
            f"{raw['model_type']} are analysed ({values})"]


def _load_config(cfg_path: Path, given: str, dtype, attn_implementation, kv_cache,
                 last_logits_only: bool = False) -> LoadedModel:
    raw = _read_config(cfg_path)
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
    config = _config_of(raw, cfg_path)
    dt = parse_dtype(dtype, torch.bfloat16)
    if impl == FLASH_ATTENTION_2 and dt not in (torch.bfloat16, torch.float16):
        raise ModelError("flash_attention_2 runs in bfloat16 or float16: pass --dtype bfloat16")
    use_cache = bool(getattr(config, "use_cache", False)) if kv_cache is None else bool(kv_cache)
    model = _build_hf(config, impl, dt, cfg_path)
    # Imported here: attncost.tracing imports this module.
    from .tracing.hf_inputs import hf_inputs
    from .tracing.hf_kernels import trace_context

    build_inputs, notes = hf_inputs(model, config, use_cache, last_logits_only)

    def example_inputs(seq_len: int, batch: int):
        return _cast_floats(build_inputs(seq_len, batch), dt)

    return LoadedModel(model, example_inputs, "config", given, dt, config=config,
                       attn_implementation=impl, kv_cache=use_cache,
                       trace_context=trace_context(model, impl),
                       notes=_defaults_note(raw, config) + notes)


def _try_build(config, impl: str, dtype: torch.dtype):
    """(model, None) built with ``impl`` on the meta device, or (None, the error)."""
    import transformers

    classes = [getattr(transformers, name, None)
               for name in list(getattr(config, "architectures", None) or [])]
    auto = [transformers.AutoModelForCausalLM, transformers.AutoModel]
    last_exc: Exception | None = None
    for cls in [c for c in classes if c is not None] + auto:
        try:
            with torch.device("meta"):
                if cls in auto:
                    model = cls.from_config(config, attn_implementation=impl, dtype=dtype)
                else:
                    config._attn_implementation = impl
                    model = cls(config).to(dtype)
            return model.eval(), None
        except Exception as exc:  # try the next class
            last_exc = exc
    return None, last_exc


def _build_hf(config, impl: str, dtype: torch.dtype, cfg_path: Path) -> torch.nn.Module:
    """The model, built with ``impl`` (``flash_attention_2``: built eager,
    the flash kernel swapped in while tracing, where transformers supports it)."""
    model, exc = _try_build(config, "eager" if impl == FLASH_ATTENTION_2 else impl, dtype)
    if model is not None and (impl != FLASH_ATTENTION_2 or getattr(model, "_supports_flash_attn", False)):
        return model
    works = _implementations_that_build(config, dtype, impl)
    name = type(model).__name__ if model is not None else \
        (getattr(config, "architectures", None) or [config.model_type])[0]
    if works:
        raise ModelError(f"{cfg_path}: transformers has no {impl} attention for {name}; it builds "
                         f"with {', '.join(works)}: pass --attn-implementation {works[0]}")
    reason = f": {type(exc).__name__}: {first_line(exc)}" if exc is not None else ""
    raise ModelError(f"{cfg_path}: transformers could not build a model from this config "
                     f"with attn_implementation={impl}{reason}")


def _implementations_that_build(config, dtype: torch.dtype, failed: str) -> list[str]:
    works = []
    eager, _ = _try_build(config, "eager", dtype)
    for other in ATTN_IMPLEMENTATIONS:
        if other == failed:
            continue
        if other == "eager":
            ok = eager is not None
        elif other == FLASH_ATTENTION_2:
            ok = eager is not None and bool(getattr(eager, "_supports_flash_attn", False))
        else:
            ok = _try_build(config, other, dtype)[0] is not None
        if ok:
            works.append(other)
    return works
