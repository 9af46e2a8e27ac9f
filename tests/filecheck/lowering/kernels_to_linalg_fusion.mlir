// RUN: dlc opt %s -p kernels-to-linalg | filecheck %s

// A fused kernel: Conv, then Add(bias) -> Relu as its epilogue. The Add is inlined
// into the Relu's loop (one linalg.generic for both), and the Conv writes straight
// into the kernel's output, which that loop then updates in place: no scratch.

builtin.module {
  func.func @main(%x: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
    %w = onnx.weight @w : tensor<2x2x1x1xf32>
    %b = onnx.weight @b : tensor<1x2x1x1xf32>
    %y = kernel.launch @k0_Conv_fused on "cpu" nodes ["conv", "bias", "relu"] -> (tensor<1x2x4x4xf32>) {
      %0 = "onnx.Conv"(%x, %w) {onnx_node_name = "conv"} : (tensor<1x2x4x4xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x4x4xf32>
      %1 = "onnx.Add"(%0, %b) {onnx_node_name = "bias"} : (tensor<1x2x4x4xf32>, tensor<1x2x1x1xf32>) -> tensor<1x2x4x4xf32>
      %2 = "onnx.Relu"(%1) {onnx_node_name = "relu"} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
      kernel.yield %2 : tensor<1x2x4x4xf32>
    }
    func.return %y : tensor<1x2x4x4xf32>
  }
}

// CHECK-LABEL: func.func private @k0_Conv_fused
// CHECK-SAME:  (%[[X:[0-9]+]]: memref<1x2x4x4xf32>, %[[W:[0-9]+]]: memref<2x2x1x1xf32>, %[[B:[0-9]+]]: memref<1x2x1x1xf32>, %[[OUT:[0-9]+]]: memref<1x2x4x4xf32>) attributes
// CHECK:      linalg.generic {{.*}} outs(%[[OUT]] : memref<1x2x4x4xf32>)
// CHECK:      linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, 0, 0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%[[OUT]], %[[B]] : memref<1x2x4x4xf32>, memref<1x2x1x1xf32>) outs(%[[OUT]] : memref<1x2x4x4xf32>)
// CHECK:        arith.addf
// CHECK:        arith.select
// CHECK:        linalg.yield
// CHECK-NOT:  linalg.generic
// CHECK:      func.return
