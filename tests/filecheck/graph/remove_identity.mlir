// RUN: dlc opt %s -p remove-identity | filecheck %s

// An Identity, even a chain of them, forwards its input: uses read the input.

builtin.module {
  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  (%[[X:.*]]: tensor<2x3xf32>)
  // CHECK-NOT:   onnx.Identity
  // CHECK:       %[[R:.*]] = "onnx.Relu"(%[[X]])
  // CHECK:       func.return %[[R]], %[[X]]
  func.func @main(%x: tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<2x3xf32>) {
    %i = "onnx.Identity"(%x) {onnx_node_name = "id"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %j = "onnx.Identity"(%i) {onnx_node_name = "id2"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %r = "onnx.Relu"(%j) {onnx_node_name = "relu"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %r, %j : tensor<2x3xf32>, tensor<2x3xf32>
  }

  // Not an Identity: Relu stays.
  // CHECK-LABEL: func.func @preserve_relu
  // CHECK:       "onnx.Relu"
  func.func @preserve_relu(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %r = "onnx.Relu"(%x) {onnx_node_name = "relu"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %r : tensor<2x3xf32>
  }
}
