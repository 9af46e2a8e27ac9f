// RUN: dlc opt %s -p cancel-transposes | filecheck %s

// Transpose(Transpose(x, p1), p2) reads x through q[i] = p1[p2[i]]: nothing when q is the identity.

builtin.module {
  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  (%[[X:.*]]: tensor<1x2x3x4xf32>)
  // CHECK-NOT:   onnx.Transpose
  // CHECK:       "onnx.Relu"(%[[X]])
  func.func @main(%x: tensor<1x2x3x4xf32>) -> tensor<1x2x3x4xf32> {
    %t = "onnx.Transpose"(%x) {perm = array<i64: 0, 2, 3, 1>, onnx_node_name = "to_nhwc"} : (tensor<1x2x3x4xf32>) -> tensor<1x3x4x2xf32>
    %u = "onnx.Transpose"(%t) {perm = array<i64: 0, 3, 1, 2>, onnx_node_name = "to_nchw"} : (tensor<1x3x4x2xf32>) -> tensor<1x2x3x4xf32>
    %r = "onnx.Relu"(%u) {onnx_node_name = "relu"} : (tensor<1x2x3x4xf32>) -> tensor<1x2x3x4xf32>
    func.return %r : tensor<1x2x3x4xf32>
  }

  // Two Transposes compose into one; a missing perm means the reversed dims.
  // CHECK-LABEL: func.func @compose
  // CHECK-SAME:  (%[[X:.*]]: tensor<2x3x4xf32>)
  // CHECK-NEXT:  %[[T:.*]] = "onnx.Transpose"(%[[X]]) {{.*}}perm = array<i64: 0, 2, 1>{{.*}} -> tensor<2x4x3xf32>
  // CHECK-NEXT:  func.return %[[T]]
  func.func @compose(%x: tensor<2x3x4xf32>) -> tensor<2x4x3xf32> {
    %t = "onnx.Transpose"(%x) {perm = array<i64: 1, 2, 0>, onnx_node_name = "first"} : (tensor<2x3x4xf32>) -> tensor<3x4x2xf32>
    %u = "onnx.Transpose"(%t) {onnx_node_name = "second"} : (tensor<3x4x2xf32>) -> tensor<2x4x3xf32>
    func.return %u : tensor<2x4x3xf32>
  }

  // The inner Transpose has another user: it stays for that user, the outer one still folds.
  // CHECK-LABEL: func.func @shared_inner
  // CHECK-SAME:  (%[[X:.*]]: tensor<2x3xf32>)
  // CHECK:       %[[T:.*]] = "onnx.Transpose"(%[[X]])
  // CHECK-NEXT:  func.return %[[X]], %[[T]]
  func.func @shared_inner(%x: tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<3x2xf32>) {
    %t = "onnx.Transpose"(%x) {onnx_node_name = "t"} : (tensor<2x3xf32>) -> tensor<3x2xf32>
    %u = "onnx.Transpose"(%t) {onnx_node_name = "u"} : (tensor<3x2xf32>) -> tensor<2x3xf32>
    func.return %u, %t : tensor<2x3xf32>, tensor<3x2xf32>
  }

  // A single Transpose that permutes dims stays.
  // CHECK-LABEL: func.func @preserve_single
  // CHECK:       "onnx.Transpose"
  func.func @preserve_single(%x: tensor<2x3xf32>) -> tensor<3x2xf32> {
    %t = "onnx.Transpose"(%x) {perm = array<i64: 1, 0>, onnx_node_name = "t"} : (tensor<2x3xf32>) -> tensor<3x2xf32>
    func.return %t : tensor<3x2xf32>
  }
}
