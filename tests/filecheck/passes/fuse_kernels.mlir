// RUN: dlc opt %s -p fuse-kernels | filecheck %s
// RUN: dlc opt %s -p "fuse-kernels{mode=elementwise}" | filecheck %s --check-prefix=ELEM

// Conv -> Add(bias) -> Relu: the elementwise ops join the contraction as its
// epilogue. The Softmax after it stays apart (a reduction after a contraction),
// and the second Conv does not take its input producer (contraction inputs are
// never fused). Every decision is written on the kernel.

builtin.module {
  func.func @main(%x: tensor<1x4x8x8xf32>) -> (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) {
    %w = onnx.weight @w : tensor<4x4x1x1xf32>
    %b = onnx.weight @b : tensor<1x4x1x1xf32>
    %c = "kernel.launch"() <{sym_name = "k0_Conv", target = "cpu"}> ({
      %0 = "onnx.Conv"(%x, %w) {onnx_node_name = "conv"} : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
      "kernel.yield"(%0) : (tensor<1x4x8x8xf32>) -> ()
    }) {nodes = ["conv"]} : () -> tensor<1x4x8x8xf32>
    %a = "kernel.launch"() <{sym_name = "k1_Add", target = "cpu"}> ({
      %1 = "onnx.Add"(%c, %b) {onnx_node_name = "bias"} : (tensor<1x4x8x8xf32>, tensor<1x4x1x1xf32>) -> tensor<1x4x8x8xf32>
      "kernel.yield"(%1) : (tensor<1x4x8x8xf32>) -> ()
    }) {nodes = ["bias"]} : () -> tensor<1x4x8x8xf32>
    %r = "kernel.launch"() <{sym_name = "k2_Relu", target = "cpu"}> ({
      %2 = "onnx.Relu"(%a) {onnx_node_name = "relu"} : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
      "kernel.yield"(%2) : (tensor<1x4x8x8xf32>) -> ()
    }) {nodes = ["relu"]} : () -> tensor<1x4x8x8xf32>
    %s = "kernel.launch"() <{sym_name = "k3_Softmax", target = "cpu"}> ({
      %3 = "onnx.Softmax"(%r) {onnx_node_name = "softmax"} : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
      "kernel.yield"(%3) : (tensor<1x4x8x8xf32>) -> ()
    }) {nodes = ["softmax"]} : () -> tensor<1x4x8x8xf32>
    %d = "kernel.launch"() <{sym_name = "k4_Conv", target = "cpu"}> ({
      %4 = "onnx.Conv"(%r, %w) {onnx_node_name = "conv2"} : (tensor<1x4x8x8xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x8x8xf32>
      "kernel.yield"(%4) : (tensor<1x4x8x8xf32>) -> ()
    }) {nodes = ["conv2"]} : () -> tensor<1x4x8x8xf32>
    func.return %s, %d : tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>
  }
}

// CHECK:      %[[K:.*]] = "kernel.launch"() <{sym_name = "k0_Conv_fused", target = "cpu"}> ({
// CHECK-NEXT:   %[[C:.*]] = "onnx.Conv"
// CHECK-NEXT:   %[[A:.*]] = "onnx.Add"(%[[C]], %{{.*}})
// CHECK-NEXT:   %[[R:.*]] = "onnx.Relu"(%[[A]])
// CHECK-NEXT:   "kernel.yield"(%[[R]])
// CHECK-NEXT: }) {nodes = ["conv", "bias", "relu"], dlc.fusion = ["conv: starts the kernel", "bias: joined conv's kernel (elementwise epilogue of a contraction)", "relu: joined bias's kernel (elementwise epilogue of a contraction)"], dlc.apart = []}
// CHECK:      "onnx.Softmax"(%[[K]])
// CHECK:      dlc.apart = ["softmax <- relu: a reduction after a contraction starts a new kernel"]
// CHECK:      "onnx.Conv"(%[[K]], %{{.*}})
// CHECK:      dlc.apart = ["conv2 <- relu: inputs of a contraction are not fused (it reads them whole, as GEMM panels)"]

// ELEM:       sym_name = "k0_Conv_fused"
// ELEM:       dlc.apart = ["softmax <- relu: --fusion=elementwise: reductions are not fused"]
