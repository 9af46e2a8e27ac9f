// RUN: python %S/../npz.py %t.weights.npz "ratio=np.float32(0.5)" "off=np.array(False)" "on=np.array(True)"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p remove-dropout | filecheck %s

// Inference Dropout (training_mode absent, or a constant false) is the identity.

builtin.module {
  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  (%[[X:.*]]: tensor<2x3xf32>)
  // CHECK-NOT:   onnx.Dropout
  // CHECK:       "onnx.Relu"(%[[X]])
  func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %d = "onnx.Dropout"(%x) {onnx_node_name = "drop"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %r = "onnx.Relu"(%d) {onnx_node_name = "relu"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %r : tensor<2x3xf32>
  }

  // An unused mask result does not keep the Dropout.
  // CHECK-LABEL: func.func @unused_mask
  // CHECK-SAME:  (%[[X:.*]]: tensor<2x3xf32>)
  // CHECK-NOT:   onnx.Dropout
  // CHECK:       func.return %[[X]]
  func.func @unused_mask(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %none = onnx.none
    %d, %mask = "onnx.Dropout"(%x, %none, %none) {onnx_node_name = "drop"} : (tensor<2x3xf32>, none, none) -> (tensor<2x3xf32>, tensor<2x3xi1>)
    func.return %d : tensor<2x3xf32>
  }

  // training_mode is a constant false.
  // CHECK-LABEL: func.func @constant_false_mode
  // CHECK-SAME:  (%[[X:.*]]: tensor<2x3xf32>)
  // CHECK-NOT:   onnx.Dropout
  // CHECK:       func.return %[[X]]
  func.func @constant_false_mode(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %ratio = onnx.weight @ratio : tensor<f32>
    %off = onnx.weight @off : tensor<i1>
    %d = "onnx.Dropout"(%x, %ratio, %off) {onnx_node_name = "drop"} : (tensor<2x3xf32>, tensor<f32>, tensor<i1>) -> tensor<2x3xf32>
    func.return %d : tensor<2x3xf32>
  }

  // training_mode is a constant true: the Dropout stays.
  // CHECK-LABEL: func.func @preserve_training_mode
  // CHECK:       "onnx.Dropout"
  func.func @preserve_training_mode(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %none = onnx.none
    %on = onnx.weight @on : tensor<i1>
    %d = "onnx.Dropout"(%x, %none, %on) {onnx_node_name = "drop"} : (tensor<2x3xf32>, none, tensor<i1>) -> tensor<2x3xf32>
    func.return %d : tensor<2x3xf32>
  }

  // The mask is used: the Dropout stays.
  // CHECK-LABEL: func.func @preserve_used_mask
  // CHECK:       "onnx.Dropout"
  func.func @preserve_used_mask(%x: tensor<2x3xf32>) -> tensor<2x3xi1> {
    %d, %mask = "onnx.Dropout"(%x) {onnx_node_name = "drop"} : (tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<2x3xi1>)
    func.return %mask : tensor<2x3xi1>
  }

  // training_mode is a run-time input: the Dropout stays.
  // CHECK-LABEL: func.func @preserve_runtime_mode
  // CHECK:       "onnx.Dropout"
  func.func @preserve_runtime_mode(%x: tensor<2x3xf32>, %ratio: tensor<f32>, %mode: tensor<i1>) -> tensor<2x3xf32> {
    %d = "onnx.Dropout"(%x, %ratio, %mode) {onnx_node_name = "drop"} : (tensor<2x3xf32>, tensor<f32>, tensor<i1>) -> tensor<2x3xf32>
    func.return %d : tensor<2x3xf32>
  }
}
