"""The variant registry and the validation output: no Triton, no kernels run."""
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from attncost.kernels import VARIANTS
from attncost.kernels.registry import REGISTRY, Dense, KernelVariant, VariantRegistry
from attncost.render.validation import print_validation

ROOT = Path(__file__).resolve().parents[2]


def test_variants_are_the_registered_names_in_order():
    assert VARIANTS == ("dense", "causal_dense", "local", "sparse", "linear")
    assert REGISTRY.names() == VARIANTS


def test_registering_a_name_twice_raises():
    registry = VariantRegistry()

    class First(KernelVariant):
        name = "dense"

    class Second(KernelVariant):
        name = "dense"

    registry.register(First)
    with pytest.raises(ValueError, match="'dense' is registered already"):
        registry.register(Second)
    assert registry.names() == ("dense",)


def test_the_bundled_registry_rejects_a_second_dense():
    class AnotherDense(Dense):
        pass

    with pytest.raises(ValueError, match="registered already"):
        REGISTRY.register(AnotherDense)
    assert REGISTRY.names() == VARIANTS


def test_a_variant_needs_a_name():
    with pytest.raises(ValueError, match="no variant name"):
        VariantRegistry().register(KernelVariant)


def test_unknown_variant_names_are_listed():
    assert REGISTRY.check(None) == list(VARIANTS)
    with pytest.raises(ValueError, match="unknown variant\\(s\\) nope; known: dense, causal_dense"):
        REGISTRY.check(["local", "nope"])


#: Imports VARIANTS; on failure names the attncost lines through which Triton was first imported.
_IMPORT_VARIANTS = r"""
import builtins, sys, traceback
first = []
real_import = builtins.__import__

def recording_import(name, *args, **kwargs):
    if name.split(".")[0] == "triton" and not first:
        stack = [f for f in traceback.extract_stack()[:-1] if f.line]
        ours = [f for f in stack if "attncost" in f.filename]
        first.extend(f"{f.filename}:{f.lineno}: {f.line}" for f in ours[-6:] + stack[-1:])
    return real_import(name, *args, **kwargs)

builtins.__import__ = recording_import
from attncost.kernels import VARIANTS
MORE_IMPORTS
if "triton" in sys.modules:
    sys.exit("these imports imported triton:\n" + "\n".join(first))
print(",".join(VARIANTS))
"""

#: The harness and its parts: run_validation chooses TRITON_INTERPRET after they are imported.
_HARNESS_MODULES = ("harness", "interpreter", "measure", "variant_report")


def _python(code: str, **env_changes) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(env_changes)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)


def test_variants_import_without_triton():
    """TRITON_INTERPRET must be chosen before Triton is imported, so listing the variants must not import it."""
    proc = _python(_IMPORT_VARIANTS.replace("MORE_IMPORTS", ""))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == ",".join(VARIANTS)


def test_harness_imports_without_triton():
    """``from attncost.kernels.harness import run_validation`` must leave the interpreter choice open."""
    imports = "\n".join(f"import attncost.kernels.{m}" for m in _HARNESS_MODULES)
    proc = _python(_IMPORT_VARIANTS.replace("MORE_IMPORTS", imports))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == ",".join(VARIANTS)


def test_cpu_validation_after_triton_was_imported_for_a_gpu():
    """Triton imported without the interpreter cannot run interpreted kernels: the check moves to a subprocess."""
    pytest.importorskip("triton")
    code = ("import json, triton\n"
            "from attncost.kernels.harness import run_validation\n"
            "report = run_validation(['linear'], device='cpu')\n"
            "print(json.dumps([(r['variant'], r['ok'], r.get('errors')) for r in report['results']]))\n")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == '[["linear", true, []]]'


def test_print_validation_table():
    report = {"device": "NVIDIA H200", "results": [
        {"variant": "dense", "correct": True, "ok": True, "max_abs_error": 0.0123, "fitted_exponent": 1.98,
         "formula_exponent": 2,
         "points": [{"seq_len": 2048, "seconds": 3e-4, "tflops": 400.2, "peak_bytes": 1000,
                     "predicted_bytes": 990},
                    {"seq_len": 4096, "seconds": 1.1e-3, "tflops": 512.7, "peak_bytes": 4000,
                     "predicted_bytes": 3990}]},
        {"variant": "sparse", "correct": False, "ok": False, "max_abs_error": 0.5, "fitted_exponent": None,
         "formula_exponent": 1, "points": []},
    ]}
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    print_validation(report, console)
    lines = console.file.getvalue().splitlines()
    assert lines[0].strip() == "attncost validate on NVIDIA H200"
    dense = next(line for line in lines if line.strip().startswith("dense")).split()
    assert dense == ["dense", "1.2e-02", "1.98", "/", "2", "4k", "1.1", "ms", "513", "1.003", "yes"]
    sparse = next(line for line in lines if line.strip().startswith("sparse")).split()
    assert sparse == ["sparse", "5.0e-01", "WRONG", "-", "/", "1", "-", "-", "-", "-", "no"]
