// RUN: dlc opt %s -p kernels-to-linalg | filecheck %s

// A 1-D Conv is lowered as the 2-D conv of unit height it is: x, w and y are seen as
// [N, C, 1, L] views, and it takes the 2-D im2col + GEMM path (kh = 1, hp = 1); its only loop nests
// pad the input (a fill, then the copy). (100 outputs: over 64, the 16 channels would take the
// lanes instead, see kernels_to_linalg_conv_channels_in_lanes.mlir.)

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
// CHECK-SAME:  (memref<16x24xf32>, memref<8x1x201xf32>, memref<16x100xf32>, memref<{{[0-9]+}}xf32>)
// CHECK-SAME:   dlc.im2col = {channels = 8 : i64, kh = 1 : i64, kw = 3 : i64, sh = 1 : i64, sw = 2 : i64, dh = 1 : i64, dw = 1 : i64, hp = 1 : i64, wp = 201 : i64, ow = 100 : i64
// CHECK-SAME:   b_layout = "window", m = 16 : i64, n = 100 : i64, k = 24 : i64
// CHECK-LABEL: func.func private @k0_Conv
// CHECK:        memref.reinterpret_cast %{{.*}} sizes: [1, 8, 1, 200]
// CHECK:        memref.reinterpret_cast %{{.*}} sizes: [16, 8, 1, 3]
// CHECK:        memref.reinterpret_cast %{{.*}} sizes: [1, 16, 1, 100]
// CHECK:        linalg.generic
// CHECK:        linalg.generic
// CHECK-NOT:    linalg.generic
// CHECK:        func.call @dlc_gemm_0
// CHECK-NEXT:   func.return
