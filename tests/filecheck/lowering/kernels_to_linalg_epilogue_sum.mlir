// RUN: dlc opt %s -p kernels-to-linalg | filecheck %s

// A residual written as a Sum of two (as Caffe2 exports write ResNet-50's) is an Add: the GEMM
// micro-kernel adds it and applies the Relu in its final store, no elementwise loop left.

builtin.module {
  func.func @main(%x: tensor<4x8xf32>, %r: tensor<4x16xf32>) -> tensor<4x16xf32> {
    %w = onnx.weight @w : tensor<8x16xf32>
    %y = kernel.launch @k0_MatMul_fused on "cpu" nodes ["mm", "residual", "relu"] -> (tensor<4x16xf32>) {
      %0 = "onnx.MatMul"(%x, %w) {onnx_node_name = "mm"} : (tensor<4x8xf32>, tensor<8x16xf32>) -> tensor<4x16xf32>
      %1 = "onnx.Sum"(%r, %0) {onnx_node_name = "residual"} : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
      %2 = "onnx.Relu"(%1) {onnx_node_name = "relu"} : (tensor<4x16xf32>) -> tensor<4x16xf32>
      kernel.yield %2 : tensor<4x16xf32>
    }
    func.return %y : tensor<4x16xf32>
  }
}

// CHECK-LABEL: func.func private @dlc_gemm_0
// CHECK-SAME:   activation = "relu"
// CHECK-SAME:   residual = 1 : i64
// CHECK-LABEL: func.func private @k0_MatMul_fused
// CHECK:        func.call @dlc_gemm_0
// CHECK-NOT:    linalg.generic
// CHECK:        func.return
