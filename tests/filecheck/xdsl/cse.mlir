// RUN: dlc opt %s -p cse | filecheck %s

// xDSL's cse merges onnx ops only when every attribute matches, onnx_node_name
// included; so on imported graphs it merges weights naming the same symbol and
// little else. merge-identical-nodes is the CSE that ignores node names.

builtin.module {
  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  (%[[X:.*]]: tensor<3xf32>)
  // CHECK:       %[[W:.*]] = onnx.weight @w
  // CHECK-NEXT:  %[[A:.*]] = "onnx.Add"(%[[X]], %[[W]])
  // CHECK-NEXT:  "onnx.Mul"(%[[A]], %[[A]])
  func.func @main(%x: tensor<3xf32>) -> tensor<3xf32> {
    %w1 = onnx.weight @w : tensor<3xf32>
    %w2 = onnx.weight @w : tensor<3xf32>
    %a1 = "onnx.Add"(%x, %w1) {onnx_node_name = "add"} : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xf32>
    %a2 = "onnx.Add"(%x, %w2) {onnx_node_name = "add"} : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xf32>
    %y = "onnx.Mul"(%a1, %a2) {onnx_node_name = "mul"} : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xf32>
    func.return %y : tensor<3xf32>
  }

  // Different node names: xDSL's cse keeps both.
  // CHECK-LABEL: func.func @preserve_named_nodes
  // CHECK-COUNT-2: "onnx.Relu"
  func.func @preserve_named_nodes(%x: tensor<3xf32>) -> tensor<3xf32> {
    %r1 = "onnx.Relu"(%x) {onnx_node_name = "r1"} : (tensor<3xf32>) -> tensor<3xf32>
    %r2 = "onnx.Relu"(%x) {onnx_node_name = "r2"} : (tensor<3xf32>) -> tensor<3xf32>
    %y = "onnx.Add"(%r1, %r2) {onnx_node_name = "add"} : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xf32>
    func.return %y : tensor<3xf32>
  }
}
