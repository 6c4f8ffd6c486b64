"""The inputs a transformers model's forward needs, as functions of N and B.

Read from the forward's signature and the config:

* token ids (B, N) for a text model; for an encoder-decoder (T5, BART)
  decoder ids (B, N) as well: N is both the encoder's and the decoder's
  tokens;
* pixel values for a vision model (ViT, CLIP's vision tower): an image one
  patch tall and N patches wide, (B, C, p, p·N), so the image has exactly N
  patches (plus the model's class token) and its pixels grow linearly in N;
  the model interpolates its position embeddings to that grid, as it does for
  any image size other than its config's; a model that attends within
  windows of the image (Swin) reads an image a window tall at its last
  stage, and N is the image's width in patches;
* a vision-language model (a vision tower whose features replace the
  text's image tokens, ``image_token_id``): token ids alone, N the text's
  tokens: a prompt without an image (each image adds its tokens to N);
* input features for a speech model: Whisper pads every input to its fixed
  window (``max_source_positions`` encoder frames, 30 s), so the encoder
  reads that window and N is the decoder's tokens; a model whose encoder
  takes any length (Speech2Text) reads N feature frames;
* a raw waveform for a speech encoder that cuts it into frames with a
  stack of strided convolutions (wav2vec 2.0, HuBERT, WavLM): the fewest
  samples that make N frames, S·(N − 1) + R (S the strides' product, R the
  stack's receptive field), so N is the frames the transformer reads.

Each case adds a line to the notes that says what N means.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch

from ..errors import ModelError


def _pair(x) -> tuple[int, int]:
    return (int(x[0]), int(x[1])) if isinstance(x, (tuple, list)) else (int(x), int(x))


def _sub(config, name: str):
    return getattr(config, name, None) or config


def _pixels(config) -> tuple[Callable[[int, int], torch.Tensor], str]:
    vision = _sub(config, "vision_config")
    patch = getattr(vision, "patch_size", None)
    if patch is None:
        raise ModelError(f"{type(config).__name__} takes pixel_values but its config has no "
                         "patch_size: write a .py file with example_inputs(seq_len, batch=1)")
    ph, pw = _pair(patch)
    channels = int(getattr(vision, "num_channels", 3))
    rows = _window_rows(vision)

    def pixels(n: int, b: int) -> torch.Tensor:
        return torch.zeros(b, channels, ph * rows, pw * n)

    if rows > 1:
        return pixels, (f"N is the image's width in patches: pixel_values of {ph * rows}×{pw}·N "
                        f"pixels, {rows} patches tall (a window's height at the last stage) and "
                        f"N wide: {rows}·N patches")
    return pixels, (f"N is the image's patches: pixel_values of {ph}×{pw}·N pixels, one "
                    f"{ph}×{pw} patch tall and N wide")


def _window_rows(vision) -> int:
    """Patch rows for a model that attends within windows of its image
    (Swin): a window's height at its last stage, whose patches are merged
    2×2 at each stage before, so that no stage's image is shorter than a
    window (Swin then shrinks the window to the image, for good); 1 for
    any other model."""
    window = getattr(vision, "window_size", None)
    if not window or not isinstance(window, (int, list, tuple)):
        return 1
    stages = len(getattr(vision, "depths", None) or [1])
    return _pair(window)[0] * 2 ** (stages - 1)


def _features(config) -> tuple[Callable[[int, int], torch.Tensor], str]:
    mels, frames = getattr(config, "num_mel_bins", None), getattr(config, "max_source_positions", None)
    if mels is not None and frames is not None:  # Whisper: a fixed window, two conv strides
        length = 2 * int(frames)

        def whisper(n: int, b: int) -> torch.Tensor:
            return torch.zeros(b, int(mels), length)

        return whisper, (f"the encoder reads the fixed audio window ({length} mel frames, "
                         f"{frames} encoder positions); N is the decoder's tokens")
    per_channel = getattr(config, "input_feat_per_channel", None)
    if per_channel is not None:
        width = int(per_channel) * int(getattr(config, "input_channels", 1))

        def frames_of(n: int, b: int) -> torch.Tensor:
            return torch.zeros(b, n, width)

        return frames_of, "N is the input's feature frames (and the decoder's tokens)"
    raise ModelError(f"{type(config).__name__} takes input_features of a layout attncost does "
                     "not know: write a .py file with example_inputs(seq_len, batch=1)")


def _waveform(config) -> tuple[Callable[[int, int], torch.Tensor], str]:
    kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
    if not kernels or not strides or len(kernels) != len(strides):
        raise ModelError(f"{type(config).__name__} takes input_values but its config has no "
                         "conv_kernel and conv_stride: write a .py file with "
                         "example_inputs(seq_len, batch=1)")
    stride, field = 1, 1
    for k, s in zip(kernels, strides):
        field += (int(k) - 1) * stride
        stride *= int(s)
    rate = getattr(config, "sampling_rate", None) or 16000

    def samples(n: int, b: int) -> torch.Tensor:
        return torch.zeros(b, stride * (n - 1) + field)

    return samples, (f"N is the audio's frames: input_values of {stride}·(N − 1) + {field} "
                     f"samples ({stride / rate * 1000:g} ms a frame at {rate} Hz)")


def _images_among_tokens(config) -> bool:
    """Does the model put its vision tower's features in place of image
    tokens of the text (LLaVA, Gemma 3, Qwen2-VL), rather than read pixels
    beside the text (CLIP)?"""
    return _image_token(config) is not None and getattr(config, "vision_config", None) is not None


def _image_token(config) -> int | None:
    token = getattr(config, "image_token_id", None)
    return getattr(config, "image_token_index", None) if token is None else token


def _text_ids(config) -> Callable[[int, int], torch.Tensor]:
    """Token ids of ordinary text: the lowest id the config names as no
    special token (padding, bos/eos, unknown, mask, an image's place), so
    that a mask the model builds from the ids (``ids != pad_index``:
    XLM, FlauBERT, CPM-Ant) sees text, not padding."""
    special = _special_ids(config)
    token = next(i for i in range(len(special) + 1) if i not in special)

    def ids(n: int, b: int) -> torch.Tensor:
        return torch.full((b, n), token, dtype=torch.long)

    return ids


#: How a config names a special token's id (``pad_token_id``,
#: ``image_token_index``, XLM's ``pad_index``, ``eos_token_ids``).
_SPECIAL_SUFFIXES = ("_token_id", "_token_ids", "_token_index", "_index")


def _special_ids(config) -> set[int]:
    """Every id the config (and its text config) names as a special token."""
    special: set[int] = set()
    for part in (config, getattr(config, "text_config", None)):
        if part is None:
            continue
        for key, value in vars(part).items():
            if not key.endswith(_SPECIAL_SUFFIXES):
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            special.update(v for v in values if isinstance(v, int) and not isinstance(v, bool))
    return special


def hf_inputs(model: torch.nn.Module, config, use_cache: bool,
              last_logits_only: bool) -> tuple[Callable[[int, int], dict], list[str]]:
    """(example_inputs(seq_len, batch) -> forward kwargs, notes on what N means)."""
    params = inspect.signature(model.forward).parameters
    builders: dict[str, Callable[[int, int], Any]] = {}
    notes: list[str] = []
    if "input_ids" in params and _images_among_tokens(config):
        notes.append("N is the text's tokens, with no image: the model places each image's "
                     "features at its image tokens, which count in N")
    elif "pixel_values" in params:
        builders["pixel_values"], note = _pixels(config)
        notes.append(note)
    if "input_features" in params:
        builders["input_features"], note = _features(config)
        notes.append(note)
    elif "input_values" in params:
        builders["input_values"], note = _waveform(config)
        notes.append(note)
    if "input_ids" in params:
        builders["input_ids"] = _text_ids(config)
        if "pixel_values" in builders:
            notes.append("N is also the text's tokens")
    if "decoder_input_ids" in params and getattr(config, "is_encoder_decoder", False):
        builders["decoder_input_ids"] = _text_ids(config)
        if "input_ids" in builders:
            notes.append("N is both the encoder's and the decoder's tokens")
    if not builders:
        raise ModelError(f"{type(model).__name__}.forward takes none of input_ids, pixel_values, "
                         "input_features, input_values: write a .py file with "
                         "example_inputs(seq_len, batch=1)")
    fixed: dict[str, Any] = {}
    if "use_cache" in params:
        fixed["use_cache"] = use_cache
    if last_logits_only and "logits_to_keep" in params:
        fixed["logits_to_keep"] = 1
    if "interpolate_pos_encoding" in params and "pixel_values" in builders:
        fixed["interpolate_pos_encoding"] = True

    def example_inputs(seq_len: int, batch: int) -> dict:
        inputs = {name: build(seq_len, batch) for name, build in builders.items()}
        inputs.update(fixed)
        return inputs

    return example_inputs, notes
