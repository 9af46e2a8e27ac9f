// RUN: dlc opt %s --load-pass-plugin %S/remove_double_relu.py -p remove-double-relu | filecheck %s

// The golden test of the example pass in docs/writing-passes.md.

builtin.module {
  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  (%[[X:.*]]: tensor<2x3xf32>)
  // CHECK:       %[[R:.*]] = "onnx.Relu"(%[[X]])
  // CHECK-NOT:   "onnx.Relu"
  // CHECK:       func.return %[[R]]
  func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %r1 = "onnx.Relu"(%x) {onnx_node_name = "relu1"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %r2 = "onnx.Relu"(%r1) {onnx_node_name = "relu2"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %r2 : tensor<2x3xf32>
  }

  // Relu(Neg(Relu(x))) is not a double Relu: both stay.
  // CHECK-LABEL: func.func @preserve_relu_neg_relu
  // CHECK-COUNT-2: "onnx.Relu"
  func.func @preserve_relu_neg_relu(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %r1 = "onnx.Relu"(%x) {onnx_node_name = "relu1"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %n = "onnx.Neg"(%r1) {onnx_node_name = "neg"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %r2 = "onnx.Relu"(%n) {onnx_node_name = "relu2"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %r2 : tensor<2x3xf32>
  }
}
