// RUN: dlc opt %s -p kernels-to-linalg | filecheck %s

// A 1-D Conv is lowered as the 2-D conv of unit height it is: x, w and y are seen as
// [N, C, 1, L] views, and it takes the 2-D im2col + GEMM path (kh = 1, hp = 1); its only loop nests
// pad the input (a fill, then the copy).

builtin.module {
  func.func @main(%x: tensor<1x8x20xf32>) -> tensor<1x16x10xf32> {
    %w = onnx.weight @w : tensor<16x8x3xf32>
    %y = kernel.launch @k0_Conv on "cpu" nodes ["conv"] -> (tensor<1x16x10xf32>) {
      %0 = "onnx.Conv"(%x, %w) {onnx_node_name = "conv", pads = [1, 0], strides = [2]} : (tensor<1x8x20xf32>, tensor<16x8x3xf32>) -> tensor<1x16x10xf32>
      kernel.yield %0 : tensor<1x16x10xf32>
    }
    func.return %y : tensor<1x16x10xf32>
  }
}

// CHECK-LABEL: func.func private @dlc_gemm_0
// CHECK-SAME:  (memref<16x24xf32>, memref<8x1x21xf32>, memref<16x10xf32>, memref<{{[0-9]+}}xf32>)
// CHECK-SAME:   dlc.im2col = {channels = 8 : i64, kh = 1 : i64, kw = 3 : i64, sh = 1 : i64, sw = 2 : i64, dh = 1 : i64, dw = 1 : i64, hp = 1 : i64, wp = 21 : i64, ow = 10 : i64
// CHECK-SAME:   b_layout = "window", m = 16 : i64, n = 10 : i64, k = 24 : i64
// CHECK-LABEL: func.func private @k0_Conv
// CHECK:        memref.reinterpret_cast %{{.*}} sizes: [1, 8, 1, 20]
// CHECK:        memref.reinterpret_cast %{{.*}} sizes: [16, 8, 1, 3]
// CHECK:        memref.reinterpret_cast %{{.*}} sizes: [1, 16, 1, 10]
// CHECK:        linalg.generic
// CHECK:        linalg.generic
// CHECK-NOT:    linalg.generic
// CHECK:        func.call @dlc_gemm_0
// CHECK-NEXT:   func.return
