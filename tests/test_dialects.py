"""Round-trip and invalid-IR tests for dlc's dialects (onnx, kernel, npu), as xDSL tests its own.

Round trip: text parsed with `dialects.context.make_context` and printed, then parsed and
printed again, gives the same text (the printed form is a fixed point), and it verifies.
Invalid IR: the parser or verifier rejects it with a message naming what is wrong.
"""

from __future__ import annotations

import pytest
from xdsl.parser import Parser

from dialects.context import make_context

ONNX_IR = """
builtin.module {
  func.func @main(%x: tensor<1x2x4x4xf32>) -> (tensor<1x3x4x4xf32>, tensor<1x3x4x4xf32>) {
    %w = onnx.weight @conv.weight : tensor<3x2x1x1xf32>
    %none = onnx.none
    %c = "onnx.Conv"(%x, %w, %none) {pads = array<i64: 0, 0, 0, 0>, group = 1 : i64, auto_pad = "NOTSET", onnx_node_name = "conv"} : (tensor<1x2x4x4xf32>, tensor<3x2x1x1xf32>, none) -> tensor<1x3x4x4xf32>
    %l = "onnx.LeakyRelu"(%c) {alpha = 1.000000e-01 : f32, onnx_node_name = "leaky"} : (tensor<1x3x4x4xf32>) -> tensor<1x3x4x4xf32>
    %d, %mask = "onnx.Dropout"(%l) {onnx_node_name = "drop"} : (tensor<1x3x4x4xf32>) -> (tensor<1x3x4x4xf32>, tensor<1x3x4x4xi1>)
    func.return %d, %c : tensor<1x3x4x4xf32>, tensor<1x3x4x4xf32>
  }
}
"""

KERNEL_IR = """
builtin.module attributes {dlc.target = "cpu"} {
  func.func @main(%x: tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<2x3xf32>) {
    %w = onnx.weight @w : tensor<2x3xf32>
    %a, %r = kernel.launch @k0_Add_fused on "cpu" nodes ["add", "relu"] -> (tensor<2x3xf32>, tensor<2x3xf32>) attributes {dlc.fusion = ["add: starts the kernel"], dlc.apart = []} {
      %0 = "onnx.Add"(%x, %w) {onnx_node_name = "add"} : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
      %1 = "onnx.Relu"(%0) {onnx_node_name = "relu"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
      kernel.yield %0, %1 : tensor<2x3xf32>, tensor<2x3xf32>
    }
    %n = kernel.launch @k1_Neg on "cpu" -> (tensor<2x3xf32>) {
      %2 = "onnx.Neg"(%r) {onnx_node_name = "neg"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
      kernel.yield %2 : tensor<2x3xf32>
    }
    func.return %a, %n : tensor<2x3xf32>, tensor<2x3xf32>
  }
}
"""

NPU_IR = """
builtin.module {
  npu.program attributes {sym_name = "npu0", scratchpad_bytes = 4096 : i64} {
    npu.buffer {sym_name = "x", shape = array<i64: 1, 4>, kind = "input"}
    npu.buffer {sym_name = "w", shape = array<i64: 4, 4>, kind = "weight"}
    npu.buffer {sym_name = "y", shape = array<i64: 1, 4>, kind = "output"}
    npu.buffer {sym_name = "flat", shape = array<i64: 4>, kind = "view", view_of = "y"}
    npu.dma_load {tensor = "x", offsets = array<i64: 0, -1>, sizes = array<i64: 1, 5>, addr = 0 : i64, pad_value = 0.000000e+00 : f32}
    npu.dma_load {tensor = "w", offsets = array<i64: 0, 0>, sizes = array<i64: 4, 4>, addr = 128 : i64, pad_value = 0.000000e+00 : f32}
    npu.mac {kind = "matmul", a = 0 : i64, a_shape = array<i64: 1, 4>, b = 128 : i64, b_shape = array<i64: 4, 4>, acc = 256 : i64, acc_shape = array<i64: 1, 4>, accumulate = 0 : i64}
    npu.vector {fn = "leaky_relu", ins = array<i64: 256>, in_shapes = [array<i64: 1, 4>], out = 320 : i64, out_shape = array<i64: 1, 4>, alpha = 1.000000e-01 : f32}
    npu.vector {fn = "max_pool", ins = array<i64: 320>, in_shapes = [array<i64: 1, 4>], out = 384 : i64, out_shape = array<i64: 1, 4>, kernel = array<i64: 1, 1>, strides = array<i64: 1, 1>, dilations = array<i64: 1, 1>}
    npu.dma_store {tensor = "y", offsets = array<i64: 0, 0>, sizes = array<i64: 1, 4>, addr = 384 : i64}
    npu.sync
  }
}
"""


def _parse(text: str):
    module = Parser(make_context(), text).parse_module()
    module.verify()
    return module


@pytest.mark.parametrize("text", [ONNX_IR, KERNEL_IR, NPU_IR], ids=["onnx", "kernel", "npu"])
def test_printed_form_is_a_fixed_point(text):
    printed = str(_parse(text))
    assert str(_parse(printed)) == printed


def test_custom_forms_print_as_written():
    """The custom assembly formats are what the printer writes (no generic form)."""
    for text in (ONNX_IR, KERNEL_IR, NPU_IR):
        assert str(_parse(text)) == text.strip()


def test_kernel_launch_generic_form_parses_to_the_custom_one():
    generic = """
builtin.module {
  func.func @main(%x: tensor<2xf32>) -> tensor<2xf32> {
    %k = "kernel.launch"() <{sym_name = "k0_Relu", target = "cpu"}> ({
      %r = "onnx.Relu"(%x) : (tensor<2xf32>) -> tensor<2xf32>
      "kernel.yield"(%r) : (tensor<2xf32>) -> ()
    }) {nodes = ["relu"]} : () -> tensor<2xf32>
    func.return %k : tensor<2xf32>
  }
}
"""
    printed = str(_parse(generic))
    assert '%k = kernel.launch @k0_Relu on "cpu" nodes ["relu"] -> (tensor<2xf32>) {' in printed
    assert "kernel.yield %r : tensor<2xf32>" in printed


def _in_main(body: str, args: str = "%x: tensor<2xf32>") -> str:
    return f"builtin.module {{\n  func.func @main({args}) {{\n{body}\n    func.return\n  }}\n}}"


INVALID = {
    "onnx.weight of a scalar": (
        "builtin.module {\n  %w = onnx.weight @w : f32\n}",
        "f32 should be of base attribute tensor"),
    "onnx attribute of the wrong type": (
        _in_main('    %y = "onnx.LeakyRelu"(%x) {alpha = "big"} '
                 ': (tensor<2xf32>) -> tensor<2xf32>'),
        '"big" should be of base attribute float'),
    "onnx.none of a tensor type": (
        'builtin.module {\n  %n = "onnx.none"() : () -> tensor<2xf32>\n}',
        "tensor<2xf32> should be of base attribute none"),
    "kernel.launch yielding other types than it declares": (
        _in_main('    %k = kernel.launch @k0 on "cpu" -> (tensor<2xf32>) {\n'
                 '      kernel.yield %x, %x : tensor<2xf32>, tensor<2xf32>\n    }'),
        r"kernel.launch @k0 yields \(tensor<2xf32>, tensor<2xf32>\) but declares results "
        r"\(tensor<2xf32>\)"),
    "kernel.launch without a target": (
        _in_main('    %k = "kernel.launch"() <{sym_name = "k0"}> ({\n'
                 '      "kernel.yield"(%x) : (tensor<2xf32>) -> ()\n    }) : () -> tensor<2xf32>'),
        "property 'target' expected"),
    "kernel.yield outside a kernel": (
        "builtin.module {\n  func.func @main(%x: tensor<2xf32>) {\n"
        "    kernel.yield %x : tensor<2xf32>\n  }\n}",
        "'kernel.yield' expects parent op 'kernel.launch'"),
    "npu.program without a scratchpad size": (
        'builtin.module {\n  npu.program attributes {sym_name = "npu0"} {\n    npu.sync\n  }\n}',
        "attribute 'scratchpad_bytes' expected in operation 'npu.program'"),
    "npu.buffer without a kind": (
        'builtin.module {\n  npu.buffer {sym_name = "x", shape = array<i64: 4>}\n}',
        "attribute 'kind' expected in operation 'npu.buffer'"),
    "npu.mac without its accumulator": (
        'builtin.module {\n  npu.mac {kind = "matmul", a = 0 : i64, a_shape = array<i64: 1, 4>, '
        'b = 64 : i64, b_shape = array<i64: 4, 4>, acc_shape = array<i64: 1, 4>, '
        'accumulate = 0 : i64}\n}',
        "attribute 'acc' expected in operation 'npu.mac'"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_ir_is_rejected_with_a_clear_message(case):
    text, message = INVALID[case]
    with pytest.raises(Exception, match=message):
        _parse(text)
