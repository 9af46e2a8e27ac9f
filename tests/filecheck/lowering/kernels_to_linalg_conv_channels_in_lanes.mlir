// RUN: dlc opt %s -p kernels-to-linalg | filecheck %s

// A strided 1x1 Conv over a small map (49 output pixels fill 49 of 64 lanes, its 32 output
// channels all of theirs) runs channels-in-lanes: the input's strided pixels are copied into
// col^T [49, 8] through one strided view (oh, ow, c, kh, kw), then one GEMM
// Y^T[49, 32] = col^T @ W^T (a row-major A, the weights a transposed B), then the transpose
// into y. (A KxK conv takes the implicit GEMM: kernels_to_linalg_conv_implicit_gemm.mlir.)

builtin.module {
  func.func @main(%x: tensor<1x8x14x14xf32>) -> tensor<1x32x7x7xf32> {
    %w = onnx.weight @w : tensor<32x8x1x1xf32>
    %y = kernel.launch @k0_Conv on "cpu" nodes ["conv"] -> (tensor<1x32x7x7xf32>) {
      %0 = "onnx.Conv"(%x, %w) {onnx_node_name = "conv", strides = [2, 2]} : (tensor<1x8x14x14xf32>, tensor<32x8x1x1xf32>) -> tensor<1x32x7x7xf32>
      kernel.yield %0 : tensor<1x32x7x7xf32>
    }
    func.return %y : tensor<1x32x7x7xf32>
  }
}

// CHECK-LABEL: func.func private @dlc_gemm_0
// CHECK-SAME:  (memref<49x8xf32>, memref<32x8xf32>, memref<49x32xf32>)
// CHECK-SAME:   m = 49 : i64, n = 32 : i64, k = 8 : i64, a_row_stride = 8 : i64, a_k_stride = 1 : i64, ldb = 32 : i64, ldc = 32 : i64, b_trans = 1 : i64
// CHECK-LABEL: func.func private @k0_Conv
// CHECK-SAME:  %[[COL:[0-9]+]]: memref<49x8xf32>, %[[YT:[0-9]+]]: memref<49x32xf32>)
// CHECK:        %[[TAPS:.*]] = memref.reinterpret_cast %{{.*}} to offset: [0], sizes: [7, 7, 8, 1, 1], strides: [28, 2, 196, 14, 1]
// CHECK:        %[[TARGET:.*]] = memref.reinterpret_cast %[[COL]] to offset: [0], sizes: [7, 7, 8, 1, 1]
// CHECK:        linalg.generic {{.*}} ins(%[[TAPS]] : {{.*}}) outs(%[[TARGET]] :
// CHECK:        func.call @dlc_gemm_0(%[[COL]], %{{.*}}, %[[YT]])
// CHECK:        linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d1, d0)>, affine_map<(d0, d1) -> (d0, d1)>]{{.*}} ins(%[[YT]] :
// CHECK-NOT:    linalg.generic
// CHECK:        func.return
