// RUN: python %S/../npz.py %t.weights.npz "w=np.ones((4, 2, 1, 1), np.float32)" "s=np.full((4, 1, 1), 2, np.float32)" "a=np.ones((1, 4, 1, 1), np.float32)" "row=np.ones(3, np.float32)" "fc=np.ones((5, 3), np.float32)" "cols=np.ones((1, 5), np.float32)"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p fold-scale-into-conv | filecheck %s

// Mul/Add by one constant per output channel folds into the Conv/Gemm weights and bias.

builtin.module {
  // Mul scales the weight (and the bias, absent here); an Add then shifts the bias.
  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  (%[[X:.*]]: tensor<1x2x3x3xf32>)
  // CHECK:       %[[W:.*]] = onnx.weight @conv.weight : tensor<4x2x1x1xf32>
  // CHECK:       %[[B:.*]] = onnx.weight @conv.bias : tensor<4xf32>
  // CHECK-NEXT:  %[[C:.*]] = "onnx.Conv"(%[[X]], %[[W]], %[[B]])
  // CHECK-NOT:   onnx.Mul
  // CHECK-NOT:   onnx.Add
  // CHECK:       func.return %[[C]]
  func.func @main(%x: tensor<1x2x3x3xf32>) -> tensor<1x4x3x3xf32> {
    %w = onnx.weight @w : tensor<4x2x1x1xf32>
    %c = "onnx.Conv"(%x, %w) {onnx_node_name = "conv"} : (tensor<1x2x3x3xf32>, tensor<4x2x1x1xf32>) -> tensor<1x4x3x3xf32>
    %s = onnx.weight @s : tensor<4x1x1xf32>
    %m = "onnx.Mul"(%c, %s) {onnx_node_name = "mul"} : (tensor<1x4x3x3xf32>, tensor<4x1x1xf32>) -> tensor<1x4x3x3xf32>
    %a = onnx.weight @a : tensor<1x4x1x1xf32>
    %y = "onnx.Add"(%a, %m) {onnx_node_name = "add"} : (tensor<1x4x1x1xf32>, tensor<1x4x3x3xf32>) -> tensor<1x4x3x3xf32>
    func.return %y : tensor<1x4x3x3xf32>
  }

  // Gemm: one value per column scales the columns of B (rows, with transB = 1).
  // CHECK-LABEL: func.func @gemm
  // CHECK:       %[[W:.*]] = onnx.weight @fc.weight : tensor<5x3xf32>
  // CHECK-NEXT:  %[[G:.*]] = "onnx.Gemm"(%{{.*}}, %[[W]]) {{.*}}transB = 1
  // CHECK-NEXT:  func.return %[[G]]
  func.func @gemm(%x: tensor<2x3xf32>) -> tensor<2x5xf32> {
    %w = onnx.weight @fc : tensor<5x3xf32>
    %g = "onnx.Gemm"(%x, %w) {transB = 1 : i64, onnx_node_name = "fc"} : (tensor<2x3xf32>, tensor<5x3xf32>) -> tensor<2x5xf32>
    %s = onnx.weight @cols : tensor<1x5xf32>
    %y = "onnx.Mul"(%g, %s) {onnx_node_name = "mul"} : (tensor<2x5xf32>, tensor<1x5xf32>) -> tensor<2x5xf32>
    func.return %y : tensor<2x5xf32>
  }

  // One value per column of the image is not per channel: the Mul stays.
  // CHECK-LABEL: func.func @preserve_per_width
  // CHECK:       "onnx.Mul"
  func.func @preserve_per_width(%x: tensor<1x2x3x3xf32>) -> tensor<1x4x3x3xf32> {
    %w = onnx.weight @w : tensor<4x2x1x1xf32>
    %c = "onnx.Conv"(%x, %w) {onnx_node_name = "conv"} : (tensor<1x2x3x3xf32>, tensor<4x2x1x1xf32>) -> tensor<1x4x3x3xf32>
    %s = onnx.weight @row : tensor<3xf32>
    %y = "onnx.Mul"(%c, %s) {onnx_node_name = "mul"} : (tensor<1x4x3x3xf32>, tensor<3xf32>) -> tensor<1x4x3x3xf32>
    func.return %y : tensor<1x4x3x3xf32>
  }

  // The scale is a run-time input: the Mul stays.
  // CHECK-LABEL: func.func @preserve_runtime_scale
  // CHECK:       "onnx.Mul"
  func.func @preserve_runtime_scale(%x: tensor<1x2x3x3xf32>, %s: tensor<4x1x1xf32>) -> tensor<1x4x3x3xf32> {
    %w = onnx.weight @w : tensor<4x2x1x1xf32>
    %c = "onnx.Conv"(%x, %w) {onnx_node_name = "conv"} : (tensor<1x2x3x3xf32>, tensor<4x2x1x1xf32>) -> tensor<1x4x3x3xf32>
    %y = "onnx.Mul"(%c, %s) {onnx_node_name = "mul"} : (tensor<1x4x3x3xf32>, tensor<4x1x1xf32>) -> tensor<1x4x3x3xf32>
    func.return %y : tensor<1x4x3x3xf32>
  }
}
