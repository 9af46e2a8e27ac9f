// RUN: python %S/../npz.py %t.weights.npz "a=np.full(3, 2, np.float32)" "b=np.full(3, 2, np.float32)" "c=np.full(3, 3, np.float32)"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p merge-identical-nodes | filecheck %s

// Ops that differ only in onnx_node_name compute the same value: the first one
// stays. Weights with equal arrays merge too, which can make their users equal.

builtin.module {
  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  (%[[X:.*]]: tensor<2x3xf32>)
  // CHECK:       %[[A:.*]] = onnx.weight @a
  // CHECK-NEXT:  %[[M:.*]] = "onnx.Mul"(%[[X]], %[[A]]) {onnx_node_name = "m1"}
  // CHECK-NEXT:  "onnx.Sub"(%[[M]], %[[M]])
  func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %a = onnx.weight @a : tensor<3xf32>
    %m1 = "onnx.Mul"(%x, %a) {onnx_node_name = "m1"} : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
    %b = onnx.weight @b : tensor<3xf32>
    %m2 = "onnx.Mul"(%x, %b) {onnx_node_name = "m2"} : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
    %y = "onnx.Sub"(%m1, %m2) {onnx_node_name = "sub"} : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %y : tensor<2x3xf32>
  }

  // Different weights, different attributes, random ops: nothing merges.
  // CHECK-LABEL: func.func @preserve_different
  // CHECK:       onnx.weight @a
  // CHECK:       onnx.weight @c
  // CHECK-COUNT-2: "onnx.Mul"
  // CHECK-COUNT-2: "onnx.Softmax"
  // CHECK-COUNT-2: "onnx.RandomNormalLike"
  func.func @preserve_different(%x: tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>) {
    %a = onnx.weight @a : tensor<3xf32>
    %c = onnx.weight @c : tensor<3xf32>
    %m1 = "onnx.Mul"(%x, %a) {onnx_node_name = "m1"} : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
    %m2 = "onnx.Mul"(%x, %c) {onnx_node_name = "m2"} : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
    %s1 = "onnx.Softmax"(%x) {axis = 0 : i64, onnx_node_name = "s1"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %s2 = "onnx.Softmax"(%x) {axis = 1 : i64, onnx_node_name = "s2"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %r1 = "onnx.RandomNormalLike"(%x) {onnx_node_name = "r1"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %r2 = "onnx.RandomNormalLike"(%x) {onnx_node_name = "r2"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %m1, %m2, %s1, %s2, %r1, %r2 : tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>
  }
}
