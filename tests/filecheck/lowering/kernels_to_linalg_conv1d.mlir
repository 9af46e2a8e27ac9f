// RUN: dlc opt %s -p kernels-to-linalg | filecheck %s

// A 1-D Conv is lowered as the 2-D conv of unit height it is: x, w and y are seen as
// [N, C, 1, L] views, and it takes the 2-D implicit GEMM (a 1x3 window, kh = 1): the input
// is padded (a fill, then the copy), and one GEMM reads A from the padded input in place,
// 100 pixels x (8 channels x 3 taps), stride 2 along the row, and stores C transposed into y.

builtin.module {
  func.func @main(%x: tensor<1x8x200xf32>) -> tensor<1x16x100xf32> {
    %w = onnx.weight @w : tensor<16x8x3xf32>
    %y = kernel.launch @k0_Conv on "cpu" nodes ["conv"] -> (tensor<1x16x100xf32>) {
      %0 = "onnx.Conv"(%x, %w) {onnx_node_name = "conv", pads = [1, 0], strides = [2]} : (tensor<1x8x200xf32>, tensor<16x8x3xf32>) -> tensor<1x16x100xf32>
      kernel.yield %0 : tensor<1x16x100xf32>
    }
    func.return %y : tensor<1x16x100xf32>
  }
}

// CHECK-LABEL: func.func private @dlc_gemm_0
// CHECK-SAME:  (memref<8x201xf32>, memref<16x24xf32>, memref<16x100xf32>)
// CHECK-SAME:   m = 100 : i64, n = 16 : i64, k = 24 : i64, a_row_stride = 2 : i64, a_k_stride = 1 : i64, ldb = 16 : i64, ldc = 100 : i64, b_trans = 1 : i64, a_group = 100 : i64, a_group_stride = 201 : i64
// CHECK-SAME:   a_window_h = 1 : i64, a_window_w = 3 : i64, a_window_row = 201 : i64, a_window_col = 1 : i64, a_window_channel = 201 : i64, c_transposed = 1 : i64
// CHECK-LABEL: func.func private @k0_Conv
// CHECK:        memref.reinterpret_cast %{{.*}} sizes: [1, 8, 1, 200]
// CHECK:        memref.reinterpret_cast %{{.*}} sizes: [16, 8, 1, 3]
// CHECK:        memref.reinterpret_cast %{{.*}} sizes: [1, 16, 1, 100]
// CHECK:        linalg.generic
// CHECK:        linalg.generic
// CHECK-NOT:    linalg.generic
// CHECK:        func.call @dlc_gemm_0
// CHECK-NEXT:   func.return
