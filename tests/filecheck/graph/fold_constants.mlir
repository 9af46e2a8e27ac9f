// RUN: python %S/../npz.py %t.weights.npz "w=np.arange(6, dtype=np.float32).reshape(3, 2)" "shape=np.array([6])"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p fold-constants | filecheck %s

// Ops reading only weights become new weights (named after the node); chains fold whole.

builtin.module {
  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  (%[[X:.*]]: tensor<2x3xf32>)
  // CHECK-NOT:   onnx.Transpose
  // CHECK-NOT:   onnx.Exp
  // CHECK:       %[[E:.*]] = onnx.weight @exp : tensor<2x3xf32>
  // CHECK-NEXT:  "onnx.Add"(%[[X]], %[[E]])
  func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %w = onnx.weight @w : tensor<3x2xf32>
    %t = "onnx.Transpose"(%w) {perm = array<i64: 1, 0>, onnx_node_name = "t"} : (tensor<3x2xf32>) -> tensor<2x3xf32>
    %e = "onnx.Exp"(%t) {onnx_node_name = "exp"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %y = "onnx.Add"(%x, %e) {onnx_node_name = "add"} : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %y : tensor<2x3xf32>
  }

  // An absent optional input (onnx.none) does not stop folding.
  // CHECK-LABEL: func.func @optional_input
  // CHECK:       %[[R:.*]] = onnx.weight @flat : tensor<6xf32>
  // CHECK-NEXT:  func.return %[[R]]
  func.func @optional_input() -> tensor<6xf32> {
    %w = onnx.weight @w : tensor<3x2xf32>
    %none = onnx.none
    %c = "onnx.Clip"(%w, %none, %none) {onnx_node_name = "clip"} : (tensor<3x2xf32>, none, none) -> tensor<3x2xf32>
    %s = onnx.weight @shape : tensor<1xi64>
    %r = "onnx.Reshape"(%c, %s) {onnx_node_name = "flat"} : (tensor<3x2xf32>, tensor<1xi64>) -> tensor<6xf32>
    func.return %r : tensor<6xf32>
  }

  // A run-time operand keeps the op.
  // CHECK-LABEL: func.func @preserve_runtime
  // CHECK:       "onnx.Mul"
  func.func @preserve_runtime(%x: tensor<3x2xf32>) -> tensor<3x2xf32> {
    %w = onnx.weight @w : tensor<3x2xf32>
    %y = "onnx.Mul"(%x, %w) {onnx_node_name = "mul"} : (tensor<3x2xf32>, tensor<3x2xf32>) -> tensor<3x2xf32>
    func.return %y : tensor<3x2xf32>
  }

  // Random ops are not Pure: never folded.
  // CHECK-LABEL: func.func @preserve_random
  // CHECK:       "onnx.RandomUniformLike"
  func.func @preserve_random() -> tensor<3x2xf32> {
    %w = onnx.weight @w : tensor<3x2xf32>
    %y = "onnx.RandomUniformLike"(%w) {onnx_node_name = "rand"} : (tensor<3x2xf32>) -> tensor<3x2xf32>
    func.return %y : tensor<3x2xf32>
  }
}
