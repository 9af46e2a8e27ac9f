// RUN: dlc opt %s -p kernels-to-linalg | filecheck %s

// Mobile blocks. A 1x1 conv over a 1x1 map (squeeze-and-excitation's fc) is the Gemm
// X[N, Cin] @ W[Cout, Cin]^T: m = N, the weights a transposed B (packed by pack-weights), not
// W @ X with one GEMM column. A depthwise 5x5 over a 7x7 map (interior 9 of 49 outputs), stride
// 1 with output rows as long as x's, runs on x's own row pitch: the 0/1 masks of the 4 tap
// columns that can fall outside a row, the 16 zeros before and after each channel's copy of x
// (a [16, 81] scratch: a channel's plane is one row, so that fuse-parallel-siblings can run
// zeros, copy and taps channel by channel), then one flat loop of the 49 outputs per channel,
// written straight into y, each off-row tap column selected away. With stride 2 and pads 2 (4x4 outputs) x's
// four phases get planes with rows of OW = 4 (26 floats each, 104 a channel), then the same
// flat loop into y. Unpadded (2x2 outputs), a phase has more columns than OW: zero-padded
// phase planes, a flat loop nest with the 25 taps unrolled (16 outputs: one whole vector),
// then the copy of the outputs.

builtin.module {
  func.func @main(%x: tensor<1x32x1x1xf32>, %d: tensor<1x16x7x7xf32>) -> (tensor<1x64x1x1xf32>, tensor<1x16x7x7xf32>, tensor<1x16x4x4xf32>, tensor<1x16x2x2xf32>) {
    %w = onnx.weight @w : tensor<64x32x1x1xf32>
    %b = onnx.weight @b : tensor<64xf32>
    %dw = onnx.weight @dw : tensor<16x1x5x5xf32>
    %y = kernel.launch @k0_Conv on "cpu" nodes ["fc"] -> (tensor<1x64x1x1xf32>) {
      %0 = "onnx.Conv"(%x, %w, %b) {onnx_node_name = "fc"} : (tensor<1x32x1x1xf32>, tensor<64x32x1x1xf32>, tensor<64xf32>) -> tensor<1x64x1x1xf32>
      kernel.yield %0 : tensor<1x64x1x1xf32>
    }
    %z = kernel.launch @k1_Conv on "cpu" nodes ["dw"] -> (tensor<1x16x7x7xf32>) {
      %1 = "onnx.Conv"(%d, %dw) {onnx_node_name = "dw", group = 16, pads = [2, 2, 2, 2]} : (tensor<1x16x7x7xf32>, tensor<16x1x5x5xf32>) -> tensor<1x16x7x7xf32>
      kernel.yield %1 : tensor<1x16x7x7xf32>
    }
    %s = kernel.launch @k2_Conv on "cpu" nodes ["dw2"] -> (tensor<1x16x4x4xf32>) {
      %2 = "onnx.Conv"(%d, %dw) {onnx_node_name = "dw2", group = 16, pads = [2, 2, 2, 2], strides = [2, 2]} : (tensor<1x16x7x7xf32>, tensor<16x1x5x5xf32>) -> tensor<1x16x4x4xf32>
      kernel.yield %2 : tensor<1x16x4x4xf32>
    }
    %v = kernel.launch @k3_Conv on "cpu" nodes ["dw3"] -> (tensor<1x16x2x2xf32>) {
      %3 = "onnx.Conv"(%d, %dw) {onnx_node_name = "dw3", group = 16, strides = [2, 2]} : (tensor<1x16x7x7xf32>, tensor<16x1x5x5xf32>) -> tensor<1x16x2x2xf32>
      kernel.yield %3 : tensor<1x16x2x2xf32>
    }
    func.return %y, %z, %s, %v : tensor<1x64x1x1xf32>, tensor<1x16x7x7xf32>, tensor<1x16x4x4xf32>, tensor<1x16x2x2xf32>
  }
}

// CHECK-LABEL: func.func private @dlc_gemm_0
// CHECK-SAME:  (memref<1x32xf32>, memref<64x32xf32>, memref<1x64xf32>, memref<64xf32>)
// CHECK-SAME:  m = 1 : i64, n = 64 : i64, k = 32 : i64
// CHECK-SAME:  b_trans = 1 : i64, bias = "row"
// CHECK-LABEL: func.func private @k0_Conv
// CHECK-NOT:    linalg.generic
// CHECK:        func.call @dlc_gemm_0
// CHECK-NEXT:   func.return
// CHECK-LABEL: func.func private @k1_Conv
// CHECK-SAME:   %{{.*}}: memref<196xf32>, %{{.*}}: memref<16x81xf32>
// CHECK:        linalg.generic
// CHECK-SAME:   outs(%{{.*}} : memref<4x49xf32>)
// CHECK:        linalg.index 1
// CHECK:        memref.reinterpret_cast %{{.*}} to offset: [0], sizes: [16, 16], strides: [81, 1]
// CHECK:        linalg.generic
// CHECK:        memref.reinterpret_cast %{{.*}} to offset: [65], sizes: [16, 16], strides: [81, 1]
// CHECK:        linalg.generic
// CHECK:        memref.reinterpret_cast %{{.*}} to offset: [16], sizes: [1, 16, 49], strides: [1296, 81, 1]
// CHECK:        linalg.generic
// CHECK:        memref.reinterpret_cast %{{.*}} to offset: [0], sizes: [1, 16, 49], strides: [1296, 81, 1]
// CHECK:        memref.reinterpret_cast %{{.*}} to offset: [32], sizes: [1, 16, 49], strides: [1296, 81, 1]
// CHECK:        linalg.generic
// CHECK-SAME:   iterator_types = ["parallel", "parallel", "parallel"]
// CHECK-SAME:   outs(%{{.*}} : memref<1x16x49xf32>)
// CHECK-COUNT-4: arith.select
// CHECK-NOT:    linalg.generic
// CHECK:        func.return
// CHECK-LABEL: func.func private @k2_Conv
// CHECK-SAME:   %{{.*}}: memref<64xf32>, %{{.*}}: memref<16x104xf32>
// CHECK:        linalg.generic
// CHECK-SAME:   outs(%{{.*}} : memref<4x16xf32>)
// CHECK:        linalg.generic
// CHECK-SAME:   outs(%{{.*}} : memref<16x104xf32>)
// CHECK:        memref.reinterpret_cast %{{.*}} to offset: [0], sizes: [1, 16, 4, 4], strides: [784, 49, 14, 2]
// CHECK:        memref.reinterpret_cast %{{.*}} to offset: [5], sizes: [1, 16, 4, 4], strides: [1664, 104, 4, 1]
// CHECK:        memref.reinterpret_cast %{{.*}} to offset: [83], sizes: [1, 16, 3, 3], strides: [1664, 104, 4, 1]
// CHECK:        linalg.generic
// CHECK:        memref.reinterpret_cast %{{.*}} to offset: [0], sizes: [1, 16, 16], strides: [1664, 104, 1]
// CHECK:        linalg.generic
// CHECK-SAME:   iterator_types = ["parallel", "parallel", "parallel"]
// CHECK-SAME:   outs(%{{.*}} : memref<1x16x16xf32>)
// CHECK-NOT:    linalg.generic
// CHECK:        func.return
// CHECK-LABEL: func.func private @k3_Conv
// CHECK-SAME:   %{{.*}}: memref<1792xf32>, %{{.*}}: memref<256xf32>
// CHECK:        linalg.generic
// CHECK-SAME:   outs(%{{.*}} : memref<1792xf32>)
// CHECK:        memref.reinterpret_cast %{{.*}} to offset: [1344], sizes: [1, 16, 3, 3], strides: [448, 28, 4, 1]
// CHECK:        memref.reinterpret_cast %{{.*}} to offset: [0], sizes: [1, 16, 1, 16], strides: [448, 28, 28, 1]
// CHECK:        linalg.generic
// CHECK-SAME:   iterator_types = ["parallel", "parallel", "parallel", "reduction", "parallel"]
// CHECK:        linalg.generic
// CHECK-NOT:    linalg.generic
// CHECK:        func.return
