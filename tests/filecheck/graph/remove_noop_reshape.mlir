// RUN: python %S/../npz.py %t.weights.npz "same=np.array([2, 3])" "s6=np.array([6, -1])" "copy0=np.array([0, -1])"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p remove-noop-reshape | filecheck %s

// Shape-only ops that keep the type vanish; a Reshape of a view reads the view's input.

builtin.module {
  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  (%[[X:.*]]: tensor<2x3xf32>)
  // CHECK-NOT:   onnx.Reshape
  // CHECK-NOT:   onnx.Flatten
  // CHECK:       "onnx.Relu"(%[[X]])
  func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %same = onnx.weight @same : tensor<2xi64>
    %r = "onnx.Reshape"(%x, %same) {onnx_node_name = "r"} : (tensor<2x3xf32>, tensor<2xi64>) -> tensor<2x3xf32>
    %f = "onnx.Flatten"(%r) {axis = 1 : i64, onnx_node_name = "f"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %y = "onnx.Relu"(%f) {onnx_node_name = "relu"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %y : tensor<2x3xf32>
  }

  // Reshape(Unsqueeze(x)) keeps the outer shape operand (no 0 entry in it).
  // CHECK-LABEL: func.func @chain
  // CHECK-SAME:  (%[[X:.*]]: tensor<2x3xf32>)
  // CHECK:       %[[S:.*]] = onnx.weight @s6
  // CHECK-NOT:   onnx.Unsqueeze
  // CHECK:       "onnx.Reshape"(%[[X]], %[[S]]) {{.*}} -> tensor<6x1xf32>
  func.func @chain(%x: tensor<2x3xf32>) -> tensor<6x1xf32> {
    %axes = onnx.weight @axes : tensor<1xi64>
    %u = "onnx.Unsqueeze"(%x, %axes) {onnx_node_name = "u"} : (tensor<2x3xf32>, tensor<1xi64>) -> tensor<1x2x3xf32>
    %s = onnx.weight @s6 : tensor<2xi64>
    %r = "onnx.Reshape"(%u, %s) {onnx_node_name = "r"} : (tensor<1x2x3xf32>, tensor<2xi64>) -> tensor<6x1xf32>
    func.return %r : tensor<6x1xf32>
  }

  // A 0 in the outer shape copies a dimension of the inner view: the merged
  // Reshape gets the static result shape as a new weight instead.
  // CHECK-LABEL: func.func @chain_with_copied_dim
  // CHECK-SAME:  (%[[X:.*]]: tensor<2x3xf32>)
  // CHECK:       %[[S:.*]] = onnx.weight @r.shape : tensor<2xi64>
  // CHECK:       "onnx.Reshape"(%[[X]], %[[S]]) {{.*}} -> tensor<1x6xf32>
  func.func @chain_with_copied_dim(%x: tensor<2x3xf32>) -> tensor<1x6xf32> {
    %axes = onnx.weight @axes : tensor<1xi64>
    %u = "onnx.Unsqueeze"(%x, %axes) {onnx_node_name = "u"} : (tensor<2x3xf32>, tensor<1xi64>) -> tensor<1x2x3xf32>
    %s = onnx.weight @copy0 : tensor<2xi64>
    %r = "onnx.Reshape"(%u, %s) {onnx_node_name = "r"} : (tensor<1x2x3xf32>, tensor<2xi64>) -> tensor<1x6xf32>
    func.return %r : tensor<1x6xf32>
  }

  // A Reshape that changes the type stays.
  // CHECK-LABEL: func.func @preserve_real_reshape
  // CHECK:       "onnx.Reshape"
  func.func @preserve_real_reshape(%x: tensor<2x3xf32>) -> tensor<6x1xf32> {
    %s = onnx.weight @s6 : tensor<2xi64>
    %r = "onnx.Reshape"(%x, %s) {onnx_node_name = "r"} : (tensor<2x3xf32>, tensor<2xi64>) -> tensor<6x1xf32>
    func.return %r : tensor<6x1xf32>
  }
}
