// RUN: dlc opt %s -p kernels-to-linalg | filecheck %s

// A 3x3 Conv (a weight filter) with a residual Add and a Relu after it runs as an implicit
// GEMM: the input is padded (a fill, then the interior), and one GEMM reads A in place from
// the padded input, 49 pixels (7 per output row, a_group) x 8 channels x 9 taps
// (a_window_*: taps a_window_row apart per kernel row, channels a_window_channel apart), the
// filter as a transposed B (pack-weights packs it), and stores C transposed (c_transposed:
// ldc = 49 floats between channels) straight into y, the bias, the residual and the Relu
// applied first. No im2col, no copy of y.

builtin.module {
  func.func @main(%x: tensor<1x8x7x7xf32>, %r: tensor<1x32x7x7xf32>) -> tensor<1x32x7x7xf32> {
    %w = onnx.weight @w : tensor<32x8x3x3xf32>
    %b = onnx.weight @b : tensor<32xf32>
    %y = kernel.launch @k0_Conv_fused on "cpu" nodes ["conv", "add", "relu"] -> (tensor<1x32x7x7xf32>) {
      %0 = "onnx.Conv"(%x, %w, %b) {onnx_node_name = "conv", pads = [1, 1, 1, 1]} : (tensor<1x8x7x7xf32>, tensor<32x8x3x3xf32>, tensor<32xf32>) -> tensor<1x32x7x7xf32>
      %1 = "onnx.Add"(%0, %r) {onnx_node_name = "add"} : (tensor<1x32x7x7xf32>, tensor<1x32x7x7xf32>) -> tensor<1x32x7x7xf32>
      %2 = "onnx.Relu"(%1) {onnx_node_name = "relu"} : (tensor<1x32x7x7xf32>) -> tensor<1x32x7x7xf32>
      kernel.yield %2 : tensor<1x32x7x7xf32>
    }
    func.return %y : tensor<1x32x7x7xf32>
  }
}

// CHECK-LABEL: func.func private @dlc_gemm_0
// CHECK-SAME:  (memref<8x81xf32>, memref<32x72xf32>, memref<32x49xf32>, memref<32xf32>, memref<32x49xf32>)
// CHECK-SAME:   m = 49 : i64, n = 32 : i64, k = 72 : i64, a_row_stride = 1 : i64, a_k_stride = 1 : i64, ldb = 32 : i64, ldc = 49 : i64, b_trans = 1 : i64, a_group = 7 : i64, a_group_stride = 9 : i64
// CHECK-SAME:   a_window_h = 3 : i64, a_window_w = 3 : i64, a_window_row = 9 : i64, a_window_col = 1 : i64, a_window_channel = 81 : i64, c_transposed = 1 : i64
// CHECK-SAME:   bias = "row", activation = "relu", residual = 1 : i64
// CHECK-LABEL: func.func private @k0_Conv_fused
// CHECK-SAME:  (%[[X:[0-9]+]]: memref<1x8x7x7xf32>, %[[W:[0-9]+]]: memref<32x8x3x3xf32>, %[[B:[0-9]+]]: memref<32xf32>, %[[R:[0-9]+]]: memref<1x32x7x7xf32>, %[[Y:[0-9]+]]: memref<1x32x7x7xf32>, %[[PAD:[0-9]+]]: memref<1x8x9x9xf32>)
// CHECK:        linalg.generic
// CHECK:        linalg.generic
// CHECK:        %[[A:.*]] = memref.reinterpret_cast %[[PAD]] to offset: [0], sizes: [8, 81]
// CHECK:        %[[F:.*]] = memref.reinterpret_cast %[[W]] to offset: [0], sizes: [32, 72]
// CHECK:        %[[C:.*]] = memref.reinterpret_cast %[[Y]] to offset: [0], sizes: [32, 49]
// CHECK:        %[[RES:.*]] = memref.reinterpret_cast %[[R]] to offset: [0], sizes: [32, 49]
// CHECK:        func.call @dlc_gemm_0(%[[A]], %[[F]], %[[C]], %[[B]], %[[RES]])
// CHECK-NOT:    linalg.generic
// CHECK:        func.return
