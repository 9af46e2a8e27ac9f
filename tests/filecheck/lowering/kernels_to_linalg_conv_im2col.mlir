// RUN: dlc opt %s -p kernels-to-linalg | filecheck %s

// A 3x3 Conv whose filter is computed at run time (a weight takes the implicit GEMM, which
// reads it packed: kernels_to_linalg_conv_implicit_gemm.mlir): the input is padded once (fill, then the interior), and one GEMM call reads
// the padded input as B; its declaration's dlc.im2col gives the geometry from which the
// GEMM builds its im2col columns a block at a time, in its micro-kernel's panels (b_layout
// "window", ldb = the block's width), in the scratch buffer it gets last.

builtin.module {
  func.func @main(%x: tensor<1x8x10x10xf32>, %w: tensor<16x8x3x3xf32>) -> tensor<1x16x10x10xf32> {
    %y = kernel.launch @k0_Conv on "cpu" nodes ["conv"] -> (tensor<1x16x10x10xf32>) {
      %0 = "onnx.Conv"(%x, %w) {onnx_node_name = "conv", pads = [1, 1, 1, 1]} : (tensor<1x8x10x10xf32>, tensor<16x8x3x3xf32>) -> tensor<1x16x10x10xf32>
      kernel.yield %0 : tensor<1x16x10x10xf32>
    }
    func.return %y : tensor<1x16x10x10xf32>
  }
}

// CHECK-LABEL: func.func private @dlc_gemm_0
// CHECK-SAME:  (memref<16x72xf32>, memref<8x12x12xf32>, memref<16x100xf32>, memref<[[SCRATCH:[0-9]+]]xf32>)
// CHECK-SAME:   dlc.im2col = {channels = 8 : i64, kh = 3 : i64, kw = 3 : i64, sh = 1 : i64, sw = 1 : i64, dh = 1 : i64, dw = 1 : i64, hp = 12 : i64, wp = 12 : i64, ow = 10 : i64, tm = 1 : i64, tn = 1 : i64, width = [[WIDTH:[0-9]+]] : i64}
// CHECK-SAME:   b_layout = "window", m = 16 : i64, n = 100 : i64, k = 72 : i64
// CHECK-LABEL: func.func private @k0_Conv
// CHECK-SAME:  (%{{.*}}: memref<1x8x10x10xf32>, %{{.*}}: memref<16x8x3x3xf32>, %{{.*}}: memref<1x16x10x10xf32>, %[[PAD:[0-9]+]]: memref<1x8x12x12xf32>, %[[COL:[0-9]+]]: memref<[[SCRATCH]]xf32>)
// CHECK:        linalg.generic
// CHECK:        linalg.generic
// CHECK-NOT:    linalg.generic
// CHECK:        %[[B:.*]] = memref.reinterpret_cast %[[PAD]] to offset: [0], sizes: [8, 12, 12]
// CHECK:        func.call @dlc_gemm_0(%{{.*}}, %[[B]], %{{.*}}, %[[COL]])
// CHECK-NEXT:   func.return
