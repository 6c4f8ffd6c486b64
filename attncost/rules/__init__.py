"""What an op costs: FLOP rules per aten op and allocation rules per device.

Importing this package registers every bundled rule.
"""
from .allocation import (ALLOCATION_RULES, DEVICES, on_device, register_allocation_rule,
                         register_workspace, workspace_bytes)
from .flops import FLOP_RULES, flop_rules, node_flops
from . import cpu  # noqa: F401  (registers the CPU rules)
from . import cuda  # noqa: F401  (registers the CUDA rules)
from . import quantized  # noqa: F401  (registers quantized matmuls' FLOP rules)

__all__ = ["ALLOCATION_RULES", "DEVICES", "FLOP_RULES", "flop_rules", "node_flops",
           "on_device", "register_allocation_rule", "register_workspace", "workspace_bytes"]
