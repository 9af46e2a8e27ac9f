// RUN: dlc opt %s -p kernels-to-linalg | filecheck %s

// Each kernel becomes a private func of linalg on memrefs (inputs, then outputs);
// @main reads weights by symbol, allocates intermediates and calls the kernels.
// The Relu kernel writes straight into the output, seen through the Reshape.

builtin.module attributes {dlc.target = "cpu"} {
  func.func @main(%x: tensor<2x3xf32>) -> tensor<6xf32> {
    %w = onnx.weight @w : tensor<2x3xf32>
    %s = onnx.weight @shape : tensor<1xi64>
    %a = kernel.launch @k0_Add on "cpu" nodes ["add"] -> (tensor<2x3xf32>) {
      %a_1 = "onnx.Add"(%x, %w) {onnx_node_name = "add"} : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
      kernel.yield %a_1 : tensor<2x3xf32>
    }
    %r = kernel.launch @k1_Relu on "cpu" nodes ["relu"] -> (tensor<2x3xf32>) {
      %r_1 = "onnx.Relu"(%a) {onnx_node_name = "relu"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
      kernel.yield %r_1 : tensor<2x3xf32>
    }
    %y = "onnx.Reshape"(%r, %s) {onnx_node_name = "flat"} : (tensor<2x3xf32>, tensor<1xi64>) -> tensor<6xf32>
    func.return %y : tensor<6xf32>
  }
}

// CHECK:      "memref.global"() <{sym_name = "w", type = memref<2x3xf32>, initial_value, sym_visibility = "private", constant}>
// CHECK-LABEL: func.func private @k0_Add
// CHECK-SAME:  (%[[X:.*]]: memref<2x3xf32>, %[[W:.*]]: memref<2x3xf32>, %[[OUT:.*]]: memref<2x3xf32>)
// CHECK-SAME:   dlc.nodes = ["add"]
// CHECK:        linalg.generic {{.*}} ins(%[[X]], %[[W]] : {{.*}}) outs(%[[OUT]] : memref<2x3xf32>)
// CHECK:          arith.addf
// CHECK-LABEL: func.func private @k1_Relu
// CHECK:          linalg.generic
// CHECK-LABEL: func.func @main
// CHECK-SAME:  (%[[IN:.*]]: memref<2x3xf32>, %[[RES:.*]]: memref<6xf32>)
// CHECK:        %[[WG:.*]] = memref.get_global @w : memref<2x3xf32>
// CHECK:        %[[T:.*]] = memref.alloc() : memref<2x3xf32>
// CHECK:        func.call @k0_Add(%[[IN]], %[[WG]], %[[T]])
// CHECK:        %[[RV:.*]] = memref.reinterpret_cast %[[RES]] {{.*}} : memref<6xf32> to memref<2x3xf32>
// CHECK:        func.call @k1_Relu(%[[T]], %[[RV]])
// CHECK-NOT:    linalg.generic
// CHECK:        func.return
