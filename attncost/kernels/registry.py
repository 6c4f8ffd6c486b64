"""The variants `attncost validate` runs, each registered once.

A variant is a ``KernelVariant`` subclass: which kernel it calls and which
naive reference it is checked against, the settings it reports, the formula
symbols it fixes (specs/variants.yaml) and its default sweep over N on a GPU.
``@register`` adds it to ``REGISTRY``; ``VARIANTS`` is the tuple of names,
in the order a validation runs and reports them.  Registering a name twice
raises ValueError.

This module imports neither Triton nor torch: the command line lists the
names before the Triton interpreter is chosen, and the kernel modules reach a
variant only as the ``mods`` it is built with.
"""
from __future__ import annotations

import sympy

#: Block size and BigBird pattern of the sparse sweep: a fixed number of
#: blocks per row, so the keys per query stay (nearly) constant as N grows.
SPARSE_BLOCK = 128
SPARSE_PATTERN = {"global_blocks": 1, "window_blocks": 3, "random_blocks": 2, "seed": 0}


class KernelVariant:
    """One variant's kernel call, reference, settings and formula symbols.

    ``mods`` maps "dense", "local", "sparse", "linear" to the kernel modules,
    built for a GPU or for the Triton interpreter by whoever imported them.
    """

    #: The name in specs/variants.yaml and on the command line.
    name: str = ""
    #: Sequence lengths of the GPU sweep (B=1, H=16, d=128, bf16 fit in 80 GB).
    default_seq_lens: tuple[int, ...] = ()
    #: Explicit launch config for ragged-length checks on a GPU (no autotuning).
    fixed_config: dict | None = None
    autotuned = True
    uses_tma = True

    def __init__(self, mods: dict, window: int, sparse_block: int, head_dim: int):
        self.mods = mods
        self.window = window
        self.sparse_block = sparse_block
        self.head_dim = head_dim

    def settings(self) -> dict:
        """What the report records about how this variant was called."""
        return {}

    def prepare(self, n: int, device: str, check: bool = False) -> dict:
        """Inputs beyond q, k, v that a call at length ``n`` needs (a layout, say)."""
        return {}

    def symbols(self, n: int, extras: dict) -> dict:
        """Formula symbols this variant fixes beyond B, H, N, d and s."""
        return {}

    def run(self, q, k, v, extras, use_tma=None, config=None):
        raise NotImplementedError

    def reference(self, q, k, v, extras):
        raise NotImplementedError


class VariantRegistry:
    """Variant classes by name, in registration order."""

    def __init__(self):
        self._classes: dict[str, type[KernelVariant]] = {}

    def register(self, cls: type[KernelVariant]) -> type[KernelVariant]:
        """Add ``cls`` under ``cls.name`` (usable as a class decorator); a name taken already raises."""
        if not cls.name:
            raise ValueError(f"{cls.__name__} has no variant name")
        if cls.name in self._classes:
            raise ValueError(f"variant {cls.name!r} is registered already "
                             f"(by {self._classes[cls.name].__name__})")
        self._classes[cls.name] = cls
        return cls

    def names(self) -> tuple[str, ...]:
        return tuple(self._classes)

    def check(self, names) -> list[str]:
        """``names`` as a list (all variants when empty); ValueError naming any unknown one."""
        names = list(names) if names else list(self._classes)
        unknown = [name for name in names if name not in self._classes]
        if unknown:
            raise ValueError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(self._classes)}")
        return names

    def create(self, name: str, mods: dict, window: int, sparse_block: int, head_dim: int) -> KernelVariant:
        """The variant ``name``, calling the kernels of ``mods``."""
        return self._classes[self.check([name])[0]](mods, window, sparse_block, head_dim)


REGISTRY = VariantRegistry()
register = REGISTRY.register


@register
class Dense(KernelVariant):
    name = "dense"
    default_seq_lens = (2048, 4096, 8192, 16384, 32768)
    fixed_config = {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}
    causal = False

    def settings(self):
        return {"causal": self.causal}

    def run(self, q, k, v, extras, use_tma=None, config=None):
        return self.mods["dense"].flash_attention(q, k, v, causal=self.causal, use_tma=use_tma, config=config)

    def reference(self, q, k, v, extras):
        return self.mods["dense"].dense_reference(q, k, v, causal=self.causal)


@register
class CausalDense(Dense):
    name = "causal_dense"
    default_seq_lens = (2048, 4096, 8192, 16384, 32768, 65536)
    causal = True


@register
class Local(KernelVariant):
    """Causal sliding window: the banded kernel of dense.py, so the same fixed config."""

    name = "local"
    default_seq_lens = (4096, 8192, 16384, 32768, 65536)
    fixed_config = Dense.fixed_config

    def settings(self):
        return {"window": self.window, "causal": True}

    def symbols(self, n, extras):
        return {"w": self.window}

    def run(self, q, k, v, extras, use_tma=None, config=None):
        return self.mods["local"].local_attention(q, k, v, self.window, causal=True, use_tma=use_tma, config=config)

    def reference(self, q, k, v, extras):
        return self.mods["local"].local_reference(q, k, v, self.window, causal=True)


@register
class Sparse(KernelVariant):
    """BigBird block-sparse attention (SPARSE_PATTERN) with blocks of ``sparse_block``."""

    name = "sparse"
    default_seq_lens = (4096, 8192, 16384, 32768, 65536)
    fixed_config = {"num_warps": 4, "num_stages": 3}

    def settings(self):
        return {"layout": "bigbird", "block_size": self.sparse_block, **SPARSE_PATTERN}

    def prepare(self, n, device, check=False):
        sparse = self.mods["sparse"]
        nb = -(-n // self.sparse_block)
        layout = sparse.bigbird_layout(nb, **SPARSE_PATTERN)
        if check and nb > 2:
            layout[:, 1, :] = False  # an empty block row: its rows must come out as zeros
        lists = sparse.layout_to_block_lists(layout.to(device))
        k_per_query = sparse.keys_per_query(layout, n, self.sparse_block)
        return {"layout": layout, "lists": lists, "k": sympy.Rational(k_per_query.numerator, k_per_query.denominator)}

    def symbols(self, n, extras):
        return {"k": extras["k"]}

    def run(self, q, k, v, extras, use_tma=None, config=None):
        return self.mods["sparse"].block_sparse_attention(q, k, v, extras["lists"], self.sparse_block,
                                                          use_tma=use_tma, config=config)

    def reference(self, q, k, v, extras):
        return self.mods["sparse"].block_sparse_reference(q, k, v, extras["layout"], self.sparse_block)


@register
class Linear(KernelVariant):
    """Non-causal linear attention with the elu + 1 feature map (no autotuning, no TMA)."""

    name = "linear"
    default_seq_lens = (16384, 65536, 262144, 1048576)
    autotuned = False
    uses_tma = False

    def settings(self):
        return {"feature_map": "elu", "causal": False}

    def symbols(self, n, extras):
        return {"r": self.head_dim}  # elu + 1 keeps the head dimension

    def run(self, q, k, v, extras, use_tma=None, config=None):
        return self.mods["linear"].linear_attention(q, k, v, "elu", causal=False)

    def reference(self, q, k, v, extras):
        return self.mods["linear"].linear_reference(q, k, v, "elu", causal=False)


#: The bundled variants' names, in the order a validation runs and reports them.
VARIANTS = REGISTRY.names()
