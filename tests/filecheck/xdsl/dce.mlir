// RUN: dlc opt %s -p dce | filecheck %s

// xDSL's dce on the graph phase: onnx ops are Pure, so unused ones (and the
// weights only they read) go; random ops are not Pure and stay.

builtin.module {
  // CHECK-LABEL: func.func @main
  // CHECK-NOT:   onnx.weight @unused
  // CHECK-NOT:   onnx.Neg
  // CHECK:       "onnx.RandomNormalLike"
  // CHECK:       %[[R:.*]] = "onnx.Relu"
  // CHECK-NEXT:  func.return %[[R]]
  func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %w = onnx.weight @unused : tensor<2x3xf32>
    %d = "onnx.Neg"(%w) {onnx_node_name = "dead"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %n = "onnx.RandomNormalLike"(%x) {onnx_node_name = "rand"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %r = "onnx.Relu"(%x) {onnx_node_name = "relu"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %r : tensor<2x3xf32>
  }

  // Everything is used: nothing goes.
  // CHECK-LABEL: func.func @preserve_used
  // CHECK:       onnx.weight @w
  // CHECK-NEXT:  "onnx.Add"
  // CHECK-NEXT:  func.return
  func.func @preserve_used(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %w = onnx.weight @w : tensor<2x3xf32>
    %a = "onnx.Add"(%x, %w) {onnx_node_name = "add"} : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %a : tensor<2x3xf32>
  }
}
