// RUN: python %S/../npz.py %t.weights.npz "w=np.ones((4, 2, 1, 1), np.float32)" "b=np.zeros(4, np.float32)" "gamma=np.full(4, 2, np.float32)" "beta=np.ones(4, np.float32)" "mean=np.zeros(4, np.float32)" "var=np.ones(4, np.float32)" "fc=np.ones((3, 4), np.float32)"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p fold-batchnorm-into-conv | filecheck %s

// Inference BatchNormalization after Conv/Gemm/MatMul with constant weights
// becomes new scaled weights and bias; the BN disappears.

builtin.module {
  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  (%[[X:.*]]: tensor<1x2x3x3xf32>)
  // CHECK:       %[[W:.*]] = onnx.weight @conv.weight : tensor<4x2x1x1xf32>
  // CHECK-NEXT:  %[[B:.*]] = onnx.weight @conv.bias : tensor<4xf32>
  // CHECK-NEXT:  %[[C:.*]] = "onnx.Conv"(%[[X]], %[[W]], %[[B]]) {onnx_node_name = "conv"}
  // CHECK-NOT:   onnx.BatchNormalization
  // CHECK:       func.return %[[C]]
  func.func @main(%x: tensor<1x2x3x3xf32>) -> tensor<1x4x3x3xf32> {
    %w = onnx.weight @w : tensor<4x2x1x1xf32>
    %b = onnx.weight @b : tensor<4xf32>
    %c = "onnx.Conv"(%x, %w, %b) {onnx_node_name = "conv"} : (tensor<1x2x3x3xf32>, tensor<4x2x1x1xf32>, tensor<4xf32>) -> tensor<1x4x3x3xf32>
    %gamma = onnx.weight @gamma : tensor<4xf32>
    %beta = onnx.weight @beta : tensor<4xf32>
    %mean = onnx.weight @mean : tensor<4xf32>
    %var = onnx.weight @var : tensor<4xf32>
    %y = "onnx.BatchNormalization"(%c, %gamma, %beta, %mean, %var) {epsilon = 1.0e-05 : f32, onnx_node_name = "bn"} : (tensor<1x4x3x3xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x3x3xf32>
    func.return %y : tensor<1x4x3x3xf32>
  }

  // A 2-D MatMul has no bias: it becomes a Gemm with the BN's shift as C.
  // CHECK-LABEL: func.func @matmul
  // CHECK-SAME:  (%[[X:.*]]: tensor<2x3xf32>)
  // CHECK:       %[[W:.*]] = onnx.weight @mm.weight : tensor<3x4xf32>
  // CHECK-NEXT:  %[[B:.*]] = onnx.weight @mm.bias : tensor<4xf32>
  // CHECK-NEXT:  %[[G:.*]] = "onnx.Gemm"(%[[X]], %[[W]], %[[B]])
  // CHECK-NEXT:  func.return %[[G]]
  func.func @matmul(%x: tensor<2x3xf32>) -> tensor<2x4xf32> {
    %w = onnx.weight @fc : tensor<3x4xf32>
    %m = "onnx.MatMul"(%x, %w) {onnx_node_name = "mm"} : (tensor<2x3xf32>, tensor<3x4xf32>) -> tensor<2x4xf32>
    %gamma = onnx.weight @gamma : tensor<4xf32>
    %beta = onnx.weight @beta : tensor<4xf32>
    %mean = onnx.weight @mean : tensor<4xf32>
    %var = onnx.weight @var : tensor<4xf32>
    %y = "onnx.BatchNormalization"(%m, %gamma, %beta, %mean, %var) {onnx_node_name = "bn"} : (tensor<2x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<2x4xf32>
    func.return %y : tensor<2x4xf32>
  }

  // The Conv result has another user: folding would change it, so the BN stays.
  // CHECK-LABEL: func.func @preserve_shared_conv
  // CHECK:       "onnx.BatchNormalization"
  func.func @preserve_shared_conv(%x: tensor<1x2x3x3xf32>) -> (tensor<1x4x3x3xf32>, tensor<1x4x3x3xf32>) {
    %w = onnx.weight @w : tensor<4x2x1x1xf32>
    %c = "onnx.Conv"(%x, %w) {onnx_node_name = "conv"} : (tensor<1x2x3x3xf32>, tensor<4x2x1x1xf32>) -> tensor<1x4x3x3xf32>
    %gamma = onnx.weight @gamma : tensor<4xf32>
    %beta = onnx.weight @beta : tensor<4xf32>
    %mean = onnx.weight @mean : tensor<4xf32>
    %var = onnx.weight @var : tensor<4xf32>
    %y = "onnx.BatchNormalization"(%c, %gamma, %beta, %mean, %var) {onnx_node_name = "bn"} : (tensor<1x4x3x3xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x3x3xf32>
    func.return %y, %c : tensor<1x4x3x3xf32>, tensor<1x4x3x3xf32>
  }

  // The Conv weight is a run-time input: nothing to fold into.
  // CHECK-LABEL: func.func @preserve_runtime_weight
  // CHECK:       "onnx.BatchNormalization"
  func.func @preserve_runtime_weight(%x: tensor<1x2x3x3xf32>, %w: tensor<4x2x1x1xf32>) -> tensor<1x4x3x3xf32> {
    %c = "onnx.Conv"(%x, %w) {onnx_node_name = "conv"} : (tensor<1x2x3x3xf32>, tensor<4x2x1x1xf32>) -> tensor<1x4x3x3xf32>
    %gamma = onnx.weight @gamma : tensor<4xf32>
    %beta = onnx.weight @beta : tensor<4xf32>
    %mean = onnx.weight @mean : tensor<4xf32>
    %var = onnx.weight @var : tensor<4xf32>
    %y = "onnx.BatchNormalization"(%c, %gamma, %beta, %mean, %var) {onnx_node_name = "bn"} : (tensor<1x4x3x3xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x3x3xf32>
    func.return %y : tensor<1x4x3x3xf32>
  }
}
