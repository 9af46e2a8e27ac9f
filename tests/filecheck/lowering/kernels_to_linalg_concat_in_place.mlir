// RUN: dlc opt %s -p kernels-to-linalg | filecheck %s

// A Concat over channels at batch 1 stores each input as one run of its output: the Relu and
// Neg kernels write straight into their runs (memref.view of one i8 buffer, at byte 0 and 72),
// the Concat kernel is neither outlined nor called, the Abs kernel reads the whole buffer, and
// the Neg kernel (the last writer) lists the Concat's node. The second Concat, over rows of two
// channels, has slices that are not contiguous: it copies.

builtin.module attributes {dlc.target = "cpu"} {
  func.func @main(%x: tensor<1x2x3x3xf32>) -> (tensor<1x4x3x3xf32>, tensor<1x2x6x3xf32>) {
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
    %y = kernel.launch @k3_Abs on "cpu" nodes ["abs"] -> (tensor<1x4x3x3xf32>) {
      %y_1 = "onnx.Abs"(%c) {onnx_node_name = "abs"} : (tensor<1x4x3x3xf32>) -> tensor<1x4x3x3xf32>
      kernel.yield %y_1 : tensor<1x4x3x3xf32>
    }
    %d = kernel.launch @k4_Sigmoid on "cpu" nodes ["sig"] -> (tensor<1x2x3x3xf32>) {
      %d_1 = "onnx.Sigmoid"(%x) {onnx_node_name = "sig"} : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
      kernel.yield %d_1 : tensor<1x2x3x3xf32>
    }
    %e = kernel.launch @k5_Concat on "cpu" nodes ["rows"] -> (tensor<1x2x6x3xf32>) {
      %e_1 = "onnx.Concat"(%d, %a) {axis = 2 : i64, onnx_node_name = "rows"} : (tensor<1x2x3x3xf32>, tensor<1x2x3x3xf32>) -> tensor<1x2x6x3xf32>
      kernel.yield %e_1 : tensor<1x2x6x3xf32>
    }
    func.return %y, %e : tensor<1x4x3x3xf32>, tensor<1x2x6x3xf32>
  }
}

// CHECK-LABEL: func.func private @k0_Relu
// CHECK-SAME:    dlc.nodes = ["relu"]
// CHECK-LABEL: func.func private @k1_Neg
// CHECK-SAME:    dlc.nodes = ["neg", "cat"]
// CHECK-NOT:   func.func private @k2_Concat
// CHECK-LABEL: func.func private @k3_Abs
// CHECK-LABEL: func.func private @k5_Concat
// CHECK-LABEL: func.func @main
// CHECK-SAME:  (%[[X:.*]]: memref<1x2x3x3xf32>, %[[Y:.*]]: memref<1x4x3x3xf32>, %[[E:.*]]: memref<1x2x6x3xf32>)
// CHECK:        %[[BYTES:.*]] = memref.alloc() : memref<144xi8>
// CHECK-NEXT:   %[[AT0:.*]] = arith.constant 0 : index
// CHECK-NEXT:   %[[A:.*]] = memref.view %[[BYTES]][%[[AT0]]][] : memref<144xi8> to memref<1x2x3x3xf32>
// CHECK-NEXT:   func.call @k0_Relu(%[[X]], %[[A]])
// CHECK-NEXT:   %[[AT72:.*]] = arith.constant 72 : index
// CHECK-NEXT:   %[[B:.*]] = memref.view %[[BYTES]][%[[AT72]]][] : memref<144xi8> to memref<1x2x3x3xf32>
// CHECK-NEXT:   func.call @k1_Neg(%[[X]], %[[B]])
// CHECK-NEXT:   %[[ALL0:.*]] = arith.constant 0 : index
// CHECK-NEXT:   %[[C:.*]] = memref.view %[[BYTES]][%[[ALL0]]][] : memref<144xi8> to memref<1x4x3x3xf32>
// CHECK-NEXT:   func.call @k3_Abs(%[[C]], %[[Y]])
// CHECK-NOT:    func.call @k2_Concat
// CHECK:        %[[D:.*]] = memref.alloc() : memref<1x2x3x3xf32>
// CHECK-NEXT:   func.call @k4_Sigmoid(%[[X]], %[[D]])
// CHECK-NEXT:   func.call @k5_Concat(%[[D]], %[[A]], %[[E]])
// CHECK-NEXT:   func.return
