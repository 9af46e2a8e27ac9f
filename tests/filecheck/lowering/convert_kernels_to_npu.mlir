// RUN: dlc opt %s -p convert-kernels-to-npu | filecheck %s

// A kernel on npu-sim (a MatMul and the Relu fuse-kernels chained to it) becomes
// one npu.program in the launch: the tile that fits the 4 KiB scratchpad twice
// (double buffering) is written as dlc.npu_tile, the Relu runs in place on each
// output tile before its store. Kernels on other targets are left alone.

// CHECK-LABEL: func.func @main
// CHECK-SAME:    (%[[A:.*]]: tensor<16x32xf32>, %[[B:.*]]: tensor<32x8xf32>)
// CHECK:         kernel.launch @k0_MatMul_fused on "npu-sim"
// CHECK-SAME:      dlc.npu_tile = array<i64: 16, 16, 8>
// CHECK-NEXT:      %[[P:.*]] = npu.program(%[[A]], %[[B]])
// CHECK-NEXT:        npu.buffer {sym_name = "in0", shape = array<i64: 16, 32>, kind = "input"}
// CHECK-NEXT:        npu.buffer {sym_name = "in1", shape = array<i64: 32, 8>, kind = "input"}
// CHECK-NEXT:        npu.buffer {sym_name = "out", shape = array<i64: 16, 8>, kind = "output"}
// CHECK-NEXT:        npu.dma_load {tensor = "in0", offsets = array<i64: 0, 0>, sizes = array<i64: 16, 16>, addr = 0 : i64
// CHECK-NEXT:        npu.dma_load {tensor = "in1", offsets = array<i64: 0, 0>, sizes = array<i64: 16, 8>, addr = 2048 : i64
// CHECK-NEXT:        npu.mac {kind = "matmul", a = 0 : i64, {{.*}} acc = 3072 : i64, {{.*}} accumulate = 0 : i64}
// The second K step loads into the other (pong) slots while the first multiplies.
// CHECK-NEXT:        npu.dma_load {tensor = "in0", offsets = array<i64: 0, 16>, sizes = array<i64: 16, 16>, addr = 1024 : i64
// CHECK-NEXT:        npu.dma_load {tensor = "in1", offsets = array<i64: 16, 0>, sizes = array<i64: 16, 8>, addr = 2560 : i64
// CHECK-NEXT:        npu.mac {kind = "matmul", a = 1024 : i64, {{.*}} acc = 3072 : i64, {{.*}} accumulate = 1 : i64}
// CHECK-NEXT:        npu.vector {fn = "relu", ins = array<i64: 3072>, {{.*}} out = 3072 : i64
// CHECK-NEXT:        npu.dma_store {tensor = "out", offsets = array<i64: 0, 0>, sizes = array<i64: 16, 8>, addr = 3072 : i64}
// CHECK-NEXT:        npu.sync
// CHECK-NEXT:      } -> tensor<16x8xf32>
// CHECK-NEXT:      kernel.yield %[[P]] : tensor<16x8xf32>
// CHECK-NOT:     onnx.MatMul

// CHECK-LABEL: func.func @preserve_cpu_kernel
// CHECK:         kernel.launch @k1_Relu on "cpu"
// CHECK-NEXT:      "onnx.Relu"
// CHECK-NOT:       npu.program

builtin.module attributes {dlc.target = "npu-sim", dlc.scratchpad_bytes = 4096 : i64, dlc.mac_array = array<i64: 8, 8>} {
  func.func @main(%a: tensor<16x32xf32>, %b: tensor<32x8xf32>) -> tensor<16x8xf32> {
    %k = kernel.launch @k0_MatMul_fused on "npu-sim" nodes ["mm", "relu"] -> (tensor<16x8xf32>) {
      %m = "onnx.MatMul"(%a, %b) {onnx_node_name = "mm"} : (tensor<16x32xf32>, tensor<32x8xf32>) -> tensor<16x8xf32>
      %r = "onnx.Relu"(%m) {onnx_node_name = "relu"} : (tensor<16x8xf32>) -> tensor<16x8xf32>
      kernel.yield %r : tensor<16x8xf32>
    }
    func.return %k : tensor<16x8xf32>
  }

  func.func @preserve_cpu_kernel(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %k = kernel.launch @k1_Relu on "cpu" nodes ["relu"] -> (tensor<2x3xf32>) {
      %r = "onnx.Relu"(%x) {onnx_node_name = "relu"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
      kernel.yield %r : tensor<2x3xf32>
    }
    func.return %k : tensor<2x3xf32>
  }
}
