// RUN: dlc opt %s -p kernels-to-linalg | filecheck %s

// Concats in a chain (a DenseNet block): the inner Concat output is an input of the outer one,
// so its bytes are a slice of the outer buffer (one memref.alloc of 288 bytes): Relu and Neg
// write the inner slice, Abs reads it whole and writes the outer rest, Sigmoid reads all. No
// Concat kernel is outlined or called; each last writer lists its Concat node.

builtin.module attributes {dlc.target = "cpu"} {
  func.func @main(%x: tensor<1x2x3x3xf32>) -> tensor<1x8x3x3xf32> {
    %a = kernel.launch @k0_Relu on "cpu" nodes ["relu"] -> (tensor<1x2x3x3xf32>) {
      %a_1 = "onnx.Relu"(%x) {onnx_node_name = "relu"} : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
      kernel.yield %a_1 : tensor<1x2x3x3xf32>
    }
    %b = kernel.launch @k1_Neg on "cpu" nodes ["neg"] -> (tensor<1x2x3x3xf32>) {
      %b_1 = "onnx.Neg"(%x) {onnx_node_name = "neg"} : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
      kernel.yield %b_1 : tensor<1x2x3x3xf32>
    }
    %c = kernel.launch @k2_Concat on "cpu" nodes ["cat"] -> (tensor<1x4x3x3xf32>) {
      %c_1 = "onnx.Concat"(%a, %b) {axis = 1 : i64, onnx_node_name = "cat"} : (tensor<1x2x3x3xf32>, tensor<1x2x3x3xf32>) -> tensor<1x4x3x3xf32>
      kernel.yield %c_1 : tensor<1x4x3x3xf32>
    }
    %d = kernel.launch @k3_Abs on "cpu" nodes ["abs"] -> (tensor<1x4x3x3xf32>) {
      %d_1 = "onnx.Abs"(%c) {onnx_node_name = "abs"} : (tensor<1x4x3x3xf32>) -> tensor<1x4x3x3xf32>
      kernel.yield %d_1 : tensor<1x4x3x3xf32>
    }
    %e = kernel.launch @k4_Concat on "cpu" nodes ["cat2"] -> (tensor<1x8x3x3xf32>) {
      %e_1 = "onnx.Concat"(%c, %d) {axis = 1 : i64, onnx_node_name = "cat2"} : (tensor<1x4x3x3xf32>, tensor<1x4x3x3xf32>) -> tensor<1x8x3x3xf32>
      kernel.yield %e_1 : tensor<1x8x3x3xf32>
    }
    %y = kernel.launch @k5_Sigmoid on "cpu" nodes ["sig"] -> (tensor<1x8x3x3xf32>) {
      %y_1 = "onnx.Sigmoid"(%e) {onnx_node_name = "sig"} : (tensor<1x8x3x3xf32>) -> tensor<1x8x3x3xf32>
      kernel.yield %y_1 : tensor<1x8x3x3xf32>
    }
    func.return %y : tensor<1x8x3x3xf32>
  }
}

// CHECK-LABEL: func.func private @k1_Neg
// CHECK-SAME:    dlc.nodes = ["neg", "cat"]
// CHECK-NOT:   func.func private @k2_Concat
// CHECK-LABEL: func.func private @k3_Abs
// CHECK-SAME:    dlc.nodes = ["abs", "cat2"]
// CHECK-NOT:   func.func private @k4_Concat
// CHECK-LABEL: func.func @main
// CHECK-SAME:  (%[[X:.*]]: memref<1x2x3x3xf32>, %[[Y:.*]]: memref<1x8x3x3xf32>)
// CHECK-NEXT:   %[[ALL:.*]] = memref.alloc() : memref<288xi8>
// CHECK-NEXT:   %[[Z:.*]] = arith.constant 0 : index
// CHECK-NEXT:   %[[INNER:.*]] = memref.view %[[ALL]][%[[Z]]][] : memref<288xi8> to memref<144xi8>
// CHECK-NEXT:   %[[Z1:.*]] = arith.constant 0 : index
// CHECK-NEXT:   %[[A:.*]] = memref.view %[[INNER]][%[[Z1]]][] : memref<144xi8> to memref<1x2x3x3xf32>
// CHECK-NEXT:   func.call @k0_Relu(%[[X]], %[[A]])
// CHECK-NEXT:   %[[AT72:.*]] = arith.constant 72 : index
// CHECK-NEXT:   %[[B:.*]] = memref.view %[[INNER]][%[[AT72]]][] : memref<144xi8> to memref<1x2x3x3xf32>
// CHECK-NEXT:   func.call @k1_Neg(%[[X]], %[[B]])
// CHECK-NEXT:   %[[Z2:.*]] = arith.constant 0 : index
// CHECK-NEXT:   %[[C:.*]] = memref.view %[[INNER]][%[[Z2]]][] : memref<144xi8> to memref<1x4x3x3xf32>
// CHECK-NEXT:   %[[AT144:.*]] = arith.constant 144 : index
// CHECK-NEXT:   %[[D:.*]] = memref.view %[[ALL]][%[[AT144]]][] : memref<288xi8> to memref<1x4x3x3xf32>
// CHECK-NEXT:   func.call @k3_Abs(%[[C]], %[[D]])
// CHECK-NEXT:   %[[Z3:.*]] = arith.constant 0 : index
// CHECK-NEXT:   %[[E:.*]] = memref.view %[[ALL]][%[[Z3]]][] : memref<288xi8> to memref<1x8x3x3xf32>
// CHECK-NEXT:   func.call @k5_Sigmoid(%[[E]], %[[Y]])
// CHECK-NEXT:   func.return
