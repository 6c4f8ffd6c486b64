"""A model from a Python file: build_model() or `model`, example_inputs()."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import ModelError, first_line
from ..units import parse_dtype

from . import LoadedModel


def _file_of(module) -> Path | None:
    file = getattr(module, "__file__", None)
    if not file:
        paths = list(getattr(module, "__path__", []) or [])
        file = paths[0] if paths else None
    try:
        return Path(file).resolve() if file else None
    except (OSError, ValueError):
        return None


def _inside(module, folder: Path) -> bool:
    file = _file_of(module)
    return file is not None and file.is_relative_to(folder)


def _user_module(module) -> bool:
    """Loaded from a file outside Python's own and installed libraries."""
    file = _file_of(module)
    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return file is not None and not any(file.is_relative_to(p) for p in prefixes)


def _provided_names(folder: Path) -> set[str]:
    """Top-level module names the folder provides (files and packages)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return set()
    return {e.stem for e in entries if e.suffix == ".py"} | \
        {e.name for e in entries if (e / "__init__.py").is_file()}


@contextlib.contextmanager
def _importable(folder: Path, keep: str = "") -> Any:
    """``folder`` importable, and its modules its own: user code of the same
    name loaded earlier (another project's ``helper.py``) is hidden
    meanwhile, and modules first imported from the folder are forgotten
    afterwards, so the next model file that imports a sibling ``helper``
    gets its own."""
    folder = folder.resolve()
    hidden = {name: sys.modules.pop(name) for name in _provided_names(folder)
              if name in sys.modules and _user_module(sys.modules[name])
              and not _inside(sys.modules[name], folder)}
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
            if name != keep and name.split(".")[0] not in before and \
                    _inside(sys.modules[name], folder):
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


def load_python(p: Path, given: str, dtype) -> LoadedModel:
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
            return cast_floats(out, dt)
    else:
        emb = next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)
        if emb is None:
            raise ModelError(f"{given}: the model does not start with an nn.Embedding, so attncost "
                             "cannot guess its inputs; define example_inputs(seq_len, batch=1)")

        def example_inputs(seq_len: int, batch: int):
            return (torch.zeros(batch, seq_len, dtype=torch.long),)
    from ..tracing.patches import any_model  # here: attncost.tracing imports this module

    return LoadedModel(model, example_inputs, "file", given, dt, notes=notes,
                       trace_context=any_model)


def cast_floats(obj, dtype):
    """Floating inputs follow --dtype, as the model's weights do."""
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, tuple):
        return tuple(cast_floats(o, dtype) for o in obj)
    if isinstance(obj, list):
        return [cast_floats(o, dtype) for o in obj]
    if isinstance(obj, dict):
        return {k: cast_floats(v, dtype) for k, v in obj.items()}
    return obj


