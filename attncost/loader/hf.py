"""A model from a transformers config, built on the meta device with no weights."""
from __future__ import annotations

import difflib
import json
from pathlib import Path

import torch

from ..errors import ModelError, first_line
from ..units import parse_dtype

from . import ATTN_IMPLEMENTATIONS, FLASH_ATTENTION_2, LoadedModel
from .files import cast_floats


def _read_config(cfg_path: Path) -> dict:
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{cfg_path}: malformed JSON at line {exc.lineno}: {exc.msg}") from exc
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise ModelError(f"{cfg_path}: not a transformers config (no \"model_type\" field)")
    return _special_floats(raw)


#: How transformers writes a float JSON has no literal for (``save_pretrained``).
_FLOAT_TAGS = {"Infinity": float("inf"), "-Infinity": float("-inf"), "NaN": float("nan")}


def _special_floats(value):
    """``{"__float__": "Infinity"}`` read back as the float transformers wrote
    (Mamba-2 hybrids' ``time_step_limit = (0.0, inf)``)."""
    if isinstance(value, dict):
        if set(value) == {"__float__"} and value["__float__"] in _FLOAT_TAGS:
            return _FLOAT_TAGS[value["__float__"]]
        return {k: _special_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_special_floats(v) for v in value]
    return value


def _config_of(raw: dict, cfg_path: Path):
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING, CONFIG_MAPPING_NAMES

    kind = raw["model_type"]
    if kind not in CONFIG_MAPPING:
        close = difflib.get_close_matches(str(kind), list(CONFIG_MAPPING.keys()), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"{cfg_path}: transformers {transformers.__version__} knows no "
                         f"model_type {kind!r}{hint}")
    # transformers' own class for the type: a package imported in the same
    # process may have registered its own config under the same model_type
    # (flash-linear-attention registers "mamba", "mamba2", "bitnet", ...)
    own = getattr(transformers, CONFIG_MAPPING_NAMES.get(kind, ""), None)
    try:
        if own is None:
            return transformers.AutoConfig.for_model(**raw)
        return own(**{k: v for k, v in raw.items() if k != "model_type"})
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


def load_config(cfg_path: Path, given: str, dtype, attn_implementation, kv_cache,
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
    fallback: list[str] = []
    try:
        model = _build_hf(config, impl, dt, cfg_path)
    except ImplementationMissing as exc:
        if attn_implementation is not None or "eager" not in exc.works:
            raise
        # as transformers does when none is asked for: eager where sdpa is not written
        impl, model = "eager", _build_hf(config, "eager", dt, cfg_path)
        fallback = [f"transformers has no sdpa attention for {exc.name}: analysed with eager, "
                    "the implementation transformers builds it with when none is asked for"]
    # Imported here: attncost.tracing imports this module.
    from ..tracing.hf_inputs import hf_inputs
    from ..tracing.patches import trace_context

    build_inputs, notes = hf_inputs(model, config, use_cache, last_logits_only)

    def example_inputs(seq_len: int, batch: int):
        return cast_floats(build_inputs(seq_len, batch), dt)

    return LoadedModel(model, example_inputs, "config", given, dt, config=config,
                       attn_implementation=impl, kv_cache=use_cache,
                       trace_context=trace_context(model, impl),
                       notes=_defaults_note(raw, config) + fallback + notes +
                       _implementation_note(impl))


def _implementation_note(impl: str) -> list[str]:
    if impl != FLASH_ATTENTION_2:
        return []
    return ["flash_attention_2 is modelled by aten's flash kernel (_flash_attention_forward): "
            "no mask, the causal flag and the sliding window as transformers passes them"]


#: Most bytes of buffers given their data on the CPU (a causal mask kept as a
#: buffer is max_positions² bytes per layer); larger ones stay on meta.
MAX_BUFFER_BYTES = 256 << 20


def _materialize_buffers(model: torch.nn.Module) -> None:
    """Give the buffers built on meta their data, as transformers does after
    loading a checkpoint (its ``_init_weights`` fills the buffers a module
    owns: GPT-Neo's local mask, rotary frequencies).  Masks read from a
    buffer then say what they let through; parameters stay on meta.  Only
    the modules that own such buffers are initialized (a millisecond, where
    the whole model's initialization takes a tenth of a second)."""
    named = [(n, b) for n, b in model.named_buffers() if b.device.type == "meta"]
    if not named or sum(b.numel() * b.element_size() for _, b in named) > MAX_BUFFER_BYTES:
        return
    owners: dict[str, dict[str, torch.Tensor]] = {}
    for name, buf in named:
        owner, _, attr = name.rpartition(".")
        owners.setdefault(owner, {})[attr] = buf
    for owner, buffers in owners.items():
        module = model.get_submodule(owner)
        for attr, buf in buffers.items():
            module._buffers[attr] = torch.zeros_like(buf, device="cpu")
        try:
            with torch.no_grad():
                _initializer(model, owner)(module)
        except Exception:  # noqa: BLE001 - an init that needs the weights keeps meta buffers
            module._buffers.update(buffers)


def _initializer(model: torch.nn.Module, owner: str):
    """The ``_init_weights`` of the innermost transformers model holding ``owner``."""
    from transformers import PreTrainedModel

    parts = owner.split(".") if owner else []
    for k in range(len(parts), -1, -1):
        holder = model.get_submodule(".".join(parts[:k]))
        if isinstance(holder, PreTrainedModel):
            return holder._init_weights
    return model._init_weights


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
            _materialize_buffers(model)
            return model.eval(), None
        except Exception as exc:  # try the next class
            last_exc = exc
    return None, last_exc


class ImplementationMissing(ModelError):
    """transformers does not build the model with the implementation asked
    for; ``works`` are those it builds it with."""

    def __init__(self, message: str, name: str, works: list[str]):
        super().__init__(message)
        self.name, self.works = name, works


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
        raise ImplementationMissing(
            f"{cfg_path}: transformers has no {impl} attention for {name}; it builds with "
            f"{', '.join(works)}: pass --attn-implementation {works[0]}", name, works)
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
