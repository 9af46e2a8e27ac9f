"""Lower the kernels placed on npu-sim to `npu` programs (the NPU's `loops` phase).

Like IREE's lowering of a dispatch region to a device executable: each
`kernel.launch` on "npu-sim" keeps its place in the graph, and its body (one op
and the elementwise chain fuse-kernels joined to it, by the NPU's fusion rules)
becomes one `npu.program` (dialects/npu.py), the instruction stream the
simulator runs. Tiles come from the target description on the module; the
chosen tile is written on the launch as `dlc.npu_tile`. Instruction selection
lives in passes/lowering/utils/npu_kernels.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from dialects.kernel import LaunchOp
from dialects.onnx import OnnxOp
from dialects.weights import weights_of
from passes.lowering.utils.npu_kernels import NpuHardware, lower_kernel


@dataclass(frozen=True)
class ConvertKernelsToNpuPass(ModulePass):
    """Turn each kernel.launch placed on npu-sim into an npu.program: tiles, DMA, MAC, vector ops."""

    name = "convert-kernels-to-npu"
    target: str = "npu-sim"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        hardware, store = NpuHardware.of(op), weights_of(op)
        for launch in list(op.walk()):
            # A launch already lowered holds an npu.program: the pass runs again harmlessly.
            if (isinstance(launch, LaunchOp) and launch.target.data == self.target
                    and any(isinstance(inner, OnnxOp) for inner in launch.body.block.ops)):
                lower_kernel(launch, hardware, store)
