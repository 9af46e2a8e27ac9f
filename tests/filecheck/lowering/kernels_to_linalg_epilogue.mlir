// RUN: dlc opt %s -p kernels-to-linalg | filecheck %s

// A MatMul whose result goes through a residual Add and a Relu: the GEMM micro-kernel
// applies both in its final store (spec activation = "relu", residual = 1, the residual
// buffer its last operand), so no elementwise loop is left in the kernel.

builtin.module {
  func.func @main(%x: tensor<4x8xf32>, %r: tensor<4x16xf32>) -> tensor<4x16xf32> {
    %w = onnx.weight @w : tensor<8x16xf32>
    %y = kernel.launch @k0_MatMul_fused on "cpu" nodes ["mm", "residual", "relu"] -> (tensor<4x16xf32>) {
      %0 = "onnx.MatMul"(%x, %w) {onnx_node_name = "mm"} : (tensor<4x8xf32>, tensor<8x16xf32>) -> tensor<4x16xf32>
      %1 = "onnx.Add"(%0, %r) {onnx_node_name = "residual"} : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
      %2 = "onnx.Relu"(%1) {onnx_node_name = "relu"} : (tensor<4x16xf32>) -> tensor<4x16xf32>
      kernel.yield %2 : tensor<4x16xf32>
    }
    func.return %y : tensor<4x16xf32>
  }
}

// CHECK-LABEL: func.func private @dlc_gemm_0
// CHECK-SAME:  (memref<4x8xf32>, memref<8x16xf32>, memref<4x16xf32>, memref<4x16xf32>)
// CHECK-SAME:   activation = "relu"
// CHECK-SAME:   residual = 1 : i64
// CHECK-LABEL: func.func private @k0_MatMul_fused
// CHECK-SAME:  (%[[X:[0-9]+]]: memref<4x8xf32>, %[[W:[0-9]+]]: memref<8x16xf32>, %[[R:[0-9]+]]: memref<4x16xf32>, %[[OUT:[0-9]+]]: memref<4x16xf32>)
// CHECK:        %[[RV:.*]] = memref.reinterpret_cast %[[R]]
// CHECK-NEXT:   func.call @dlc_gemm_0(%{{.*}}, %{{.*}}, %{{.*}}, %[[RV]])
// CHECK-NOT:    linalg.generic
// CHECK:        func.return
