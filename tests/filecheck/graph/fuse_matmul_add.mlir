// RUN: dlc opt %s -p fuse-matmul-add | filecheck %s

// 2-D MatMul + bias (either Add operand) is one Gemm, the bias as C.

builtin.module {
  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  (%[[X:.*]]: tensor<4x3xf32>)
  // CHECK:       %[[W:.*]] = onnx.weight @w
  // CHECK:       %[[B:.*]] = onnx.weight @b
  // CHECK-NEXT:  %[[G:.*]] = "onnx.Gemm"(%[[X]], %[[W]], %[[B]]) {onnx_node_name = "mm"} : (tensor<4x3xf32>, tensor<3x5xf32>, tensor<5xf32>) -> tensor<4x5xf32>
  // CHECK-NEXT:  func.return %[[G]]
  func.func @main(%x: tensor<4x3xf32>) -> tensor<4x5xf32> {
    %w = onnx.weight @w : tensor<3x5xf32>
    %m = "onnx.MatMul"(%x, %w) {onnx_node_name = "mm"} : (tensor<4x3xf32>, tensor<3x5xf32>) -> tensor<4x5xf32>
    %b = onnx.weight @b : tensor<5xf32>
    %y = "onnx.Add"(%b, %m) {onnx_node_name = "add"} : (tensor<5xf32>, tensor<4x5xf32>) -> tensor<4x5xf32>
    func.return %y : tensor<4x5xf32>
  }

  // Batched MatMul: Gemm is 2-D only, so both ops stay.
  // CHECK-LABEL: func.func @preserve_batched
  // CHECK:       "onnx.MatMul"
  // CHECK:       "onnx.Add"
  func.func @preserve_batched(%x: tensor<2x4x3xf32>) -> tensor<2x4x5xf32> {
    %w = onnx.weight @w : tensor<3x5xf32>
    %m = "onnx.MatMul"(%x, %w) {onnx_node_name = "mm"} : (tensor<2x4x3xf32>, tensor<3x5xf32>) -> tensor<2x4x5xf32>
    %b = onnx.weight @b : tensor<5xf32>
    %y = "onnx.Add"(%m, %b) {onnx_node_name = "add"} : (tensor<2x4x5xf32>, tensor<5xf32>) -> tensor<2x4x5xf32>
    func.return %y : tensor<2x4x5xf32>
  }

  // The product is also returned: fusing would compute it twice.
  // CHECK-LABEL: func.func @preserve_shared_product
  // CHECK:       "onnx.MatMul"
  // CHECK:       "onnx.Add"
  func.func @preserve_shared_product(%x: tensor<4x3xf32>) -> (tensor<4x5xf32>, tensor<4x5xf32>) {
    %w = onnx.weight @w : tensor<3x5xf32>
    %m = "onnx.MatMul"(%x, %w) {onnx_node_name = "mm"} : (tensor<4x3xf32>, tensor<3x5xf32>) -> tensor<4x5xf32>
    %b = onnx.weight @b : tensor<5xf32>
    %y = "onnx.Add"(%m, %b) {onnx_node_name = "add"} : (tensor<4x5xf32>, tensor<5xf32>) -> tensor<4x5xf32>
    func.return %y, %m : tensor<4x5xf32>, tensor<4x5xf32>
  }

  // The Add broadcasts the product to more rows: not a Gemm bias.
  // CHECK-LABEL: func.func @preserve_broadcast_product
  // CHECK:       "onnx.MatMul"
  func.func @preserve_broadcast_product(%x: tensor<1x3xf32>) -> tensor<4x5xf32> {
    %w = onnx.weight @w : tensor<3x5xf32>
    %m = "onnx.MatMul"(%x, %w) {onnx_node_name = "mm"} : (tensor<1x3xf32>, tensor<3x5xf32>) -> tensor<1x5xf32>
    %b = onnx.weight @b2 : tensor<4x5xf32>
    %y = "onnx.Add"(%m, %b) {onnx_node_name = "add"} : (tensor<1x5xf32>, tensor<4x5xf32>) -> tensor<4x5xf32>
    func.return %y : tensor<4x5xf32>
  }
}
