// RUN: dlc opt %s -p kernels-to-linalg | filecheck %s

// A 1x1 Conv over a small map (49 output pixels would fill 49 of 64 lanes, its 32 output
// channels fill all of theirs) runs as an implicit GEMM with one tap: A is read in place from x
// (7 pixels of an output row a group, 1 float apart; rows 7 floats apart, channels 49), the
// weights are a transposed B, and C is stored transposed into y's channel planes. No copy of the
// input, no transpose of the output (kernels_to_linalg_conv_implicit_gemm.mlir: a KxK conv).

builtin.module {
  func.func @main(%x: tensor<1x8x7x7xf32>) -> tensor<1x32x7x7xf32> {
    %w = onnx.weight @w : tensor<32x8x1x1xf32>
    %y = kernel.launch @k0_Conv on "cpu" nodes ["conv"] -> (tensor<1x32x7x7xf32>) {
      %0 = "onnx.Conv"(%x, %w) {onnx_node_name = "conv"} : (tensor<1x8x7x7xf32>, tensor<32x8x1x1xf32>) -> tensor<1x32x7x7xf32>
      kernel.yield %0 : tensor<1x32x7x7xf32>
    }
    func.return %y : tensor<1x32x7x7xf32>
  }
}

// CHECK-LABEL: func.func private @dlc_gemm_0
// CHECK-SAME:  (memref<8x49xf32>, memref<32x8xf32>, memref<32x49xf32>)
// CHECK-SAME:   m = 49 : i64, n = 32 : i64, k = 8 : i64, a_row_stride = 1 : i64, a_k_stride = 1 : i64, ldb = 32 : i64, ldc = 49 : i64, b_trans = 1 : i64
// CHECK-SAME:   a_group = 7 : i64, a_group_stride = 7 : i64
// CHECK-SAME:   a_window_h = 1 : i64, a_window_w = 1 : i64, a_window_row = 7 : i64, a_window_col = 1 : i64, a_window_channel = 49 : i64, c_transposed = 1 : i64
// CHECK-LABEL: func.func private @k0_Conv
// CHECK-SAME:  (%[[X:[0-9]+]]: memref<1x8x7x7xf32>, %[[W:[0-9]+]]: memref<32x8x1x1xf32>, %[[Y:[0-9]+]]: memref<1x32x7x7xf32>)
// CHECK-NOT:    linalg.generic
// CHECK:        %[[A:.*]] = memref.reinterpret_cast %[[X]] to offset: [0], sizes: [8, 49]
// CHECK:        %[[B:.*]] = memref.reinterpret_cast %[[W]] to offset: [0], sizes: [32, 8]
// CHECK:        %[[C:.*]] = memref.reinterpret_cast %[[Y]] to offset: [0], sizes: [32, 49]
// CHECK-NEXT:   func.call @dlc_gemm_0(%[[A]], %[[B]], %[[C]])
// CHECK-NOT:    linalg.generic
// CHECK:        func.return
