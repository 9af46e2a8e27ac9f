// RUN: dlc opt %s -p fuse-kernels | filecheck %s
// RUN: dlc opt %s -p "fuse-kernels{mode=elementwise}" | filecheck %s --check-prefix=ELEM

// Conv -> Add(bias) -> Relu: the elementwise ops join the contraction as its
// epilogue. The Softmax after it stays apart (a reduction after a contraction),
// and the second Conv does not take its input producer (contraction inputs are
// never fused). Every decision is written on the kernel.

builtin.module {
  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  (%[[X:.*]]: tensor<1x4x8x8xf32>)
  // CHECK:       %[[K:.*]] = kernel.launch @k0_Conv_fused on "cpu" nodes ["conv", "bias", "relu"]
  // CHECK-SAME:    dlc.fusion = ["conv: starts the kernel", "bias: joined conv's kernel (elementwise epilogue of a contraction)", "relu: joined bias's kernel (elementwise epilogue of a contraction)"], dlc.apart = []
  // CHECK-NEXT:    %[[C:.*]] = "onnx.Conv"(%[[X]], %{{.*}})
  // CHECK-NEXT:    %[[A:.*]] = "onnx.Add"(%[[C]], %{{.*}})
  // CHECK-NEXT:    %[[R:.*]] = "onnx.Relu"(%[[A]])
  // CHECK-NEXT:    kernel.yield %[[R]]
  // CHECK-NEXT:  }
  // CHECK-NEXT:  kernel.launch @k3_Softmax
  // CHECK-SAME:    dlc.apart = ["softmax <- relu: a reduction after a contraction starts a new kernel"]
  // CHECK-NEXT:    "onnx.Softmax"(%[[K]])
  // CHECK:       kernel.launch @k4_Conv
  // CHECK-SAME:    dlc.apart = ["conv2 <- relu: inputs of a contraction are not fused (it reads them whole, as GEMM panels)"]
  // CHECK-NEXT:    "onnx.Conv"(%[[K]], %{{.*}})

  // ELEM-LABEL:  func.func @main
  // ELEM:        kernel.launch @k0_Conv_fused
  // ELEM:        kernel.launch @k3_Softmax
  // ELEM-SAME:     dlc.apart = ["softmax <- relu: --fusion=elementwise: reductions are not fused"]
  func.func @main(%x: tensor<1x4x8x8xf32>) -> (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) {
    %w = onnx.weight @w : tensor<4x4x1x1xf32>
    %b = onnx.weight @b : tensor<1x4x1x1xf32>
    %c = kernel.launch @k0_Conv on "cpu" nodes ["conv"] -> (tensor<1x4x8x8xf32>) {
      %0 = "onnx.Conv"(%x, %w) {onnx_node_name = "conv"} : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
      kernel.yield %0 : tensor<1x4x8x8xf32>
    }
    %a = kernel.launch @k1_Add on "cpu" nodes ["bias"] -> (tensor<1x4x8x8xf32>) {
      %1 = "onnx.Add"(%c, %b) {onnx_node_name = "bias"} : (tensor<1x4x8x8xf32>, tensor<1x4x1x1xf32>) -> tensor<1x4x8x8xf32>
      kernel.yield %1 : tensor<1x4x8x8xf32>
    }
    %r = kernel.launch @k2_Relu on "cpu" nodes ["relu"] -> (tensor<1x4x8x8xf32>) {
      %2 = "onnx.Relu"(%a) {onnx_node_name = "relu"} : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
      kernel.yield %2 : tensor<1x4x8x8xf32>
    }
    %s = kernel.launch @k3_Softmax on "cpu" nodes ["softmax"] -> (tensor<1x4x8x8xf32>) {
      %3 = "onnx.Softmax"(%r) {onnx_node_name = "softmax"} : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
      kernel.yield %3 : tensor<1x4x8x8xf32>
    }
    %d = kernel.launch @k4_Conv on "cpu" nodes ["conv2"] -> (tensor<1x4x8x8xf32>) {
      %4 = "onnx.Conv"(%r, %w) {onnx_node_name = "conv2"} : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
      kernel.yield %4 : tensor<1x4x8x8xf32>
    }
    func.return %s, %d : tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>
  }

  // Two MatMuls in a row: a contraction reads its input whole, so neither kernel
  // changes; only the reasons are recorded.
  // CHECK-LABEL: func.func @preserve_contraction_chain
  // CHECK:       kernel.launch @k0_MatMul on "cpu" nodes ["mm1"]
  // CHECK-SAME:    dlc.fusion = ["mm1: starts the kernel"]
  // CHECK:       kernel.launch @k1_MatMul on "cpu" nodes ["mm2"]
  // CHECK-SAME:    dlc.apart = ["mm2 <- mm1: inputs of a contraction are not fused
  // CHECK-NOT:   _fused
  func.func @preserve_contraction_chain(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>) -> tensor<4x8xf32> {
    %a = kernel.launch @k0_MatMul on "cpu" nodes ["mm1"] -> (tensor<4x8xf32>) {
      %0 = "onnx.MatMul"(%x, %w) {onnx_node_name = "mm1"} : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
      kernel.yield %0 : tensor<4x8xf32>
    }
    %b = kernel.launch @k1_MatMul on "cpu" nodes ["mm2"] -> (tensor<4x8xf32>) {
      %1 = "onnx.MatMul"(%a, %w) {onnx_node_name = "mm2"} : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
      kernel.yield %1 : tensor<4x8xf32>
    }
    func.return %b : tensor<4x8xf32>
  }
}
