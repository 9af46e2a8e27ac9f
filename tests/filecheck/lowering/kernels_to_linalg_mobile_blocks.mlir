// RUN: dlc opt %s -p kernels-to-linalg | filecheck %s

// Mobile blocks. A 1x1 conv over a 1x1 map (squeeze-and-excitation's fc) is the Gemm
// X[N, Cin] @ W[Cout, Cin]^T: m = N, the weights a transposed B (packed by pack-weights), not
// W @ X with one GEMM column. A depthwise 5x5 over a 7x7 map (interior 9 of 49 outputs) runs on
// a zero-padded phase plane (12 rows of pitch 11): a fill, the copy of x into it, one flat loop
// nest with the 25 taps unrolled (80 outputs: 5 whole vectors), then the copy of the 7x7 outputs.

builtin.module {
  func.func @main(%x: tensor<1x32x1x1xf32>, %d: tensor<1x16x7x7xf32>) -> (tensor<1x64x1x1xf32>, tensor<1x16x7x7xf32>) {
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
    func.return %y, %z : tensor<1x64x1x1xf32>, tensor<1x16x7x7xf32>
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
// CHECK-SAME:   %{{.*}}: memref<2112xf32>, %{{.*}}: memref<1408xf32>
// CHECK:        linalg.generic
// CHECK-SAME:   outs(%{{.*}} : memref<2112xf32>)
// CHECK:        memref.reinterpret_cast %{{.*}} to offset: [24], sizes: [1, 16, 7, 7], strides: [2112, 132, 11, 1]
// CHECK:        linalg.generic
// CHECK:        memref.reinterpret_cast %{{.*}} to offset: [48], sizes: [1, 16, 1, 80], strides: [2112, 132, 132, 1]
// CHECK:        linalg.generic
// CHECK-SAME:   iterator_types = ["parallel", "parallel", "parallel", "reduction", "parallel"]
// CHECK:        memref.reinterpret_cast %{{.*}} to offset: [0], sizes: [1, 16, 7, 7], strides: [1408, 88, 11, 1]
// CHECK:        linalg.generic
// CHECK-NOT:    linalg.generic
// CHECK:        func.return
