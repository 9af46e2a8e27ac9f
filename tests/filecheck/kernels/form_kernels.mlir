// RUN: dlc opt %s -p form-kernels | filecheck %s

// Each compute op gets its own kernel.launch on the module's target; the view
// op (Reshape) stays outside, since it moves no data.

builtin.module attributes {dlc.target = "cpu"} {
  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  (%[[X:.*]]: tensor<2x3xf32>)
  // CHECK:       %[[W:.*]] = onnx.weight @w
  // CHECK:       %[[ADD:.*]] = kernel.launch @k0_Add on "cpu" nodes ["add"] -> (tensor<2x3xf32>) {
  // CHECK-NEXT:    %[[A:.*]] = "onnx.Add"(%[[X]], %[[W]])
  // CHECK-NEXT:    kernel.yield %[[A]] : tensor<2x3xf32>
  // CHECK-NEXT:  }
  // CHECK-NEXT:  %[[RELU:.*]] = kernel.launch @k1_Relu on "cpu" nodes ["relu"] -> (tensor<2x3xf32>) {
  // CHECK-NEXT:    %[[R:.*]] = "onnx.Relu"(%[[ADD]])
  // CHECK-NEXT:    kernel.yield %[[R]] : tensor<2x3xf32>
  // CHECK-NEXT:  }
  // CHECK-NEXT:  %[[Y:.*]] = "onnx.Reshape"(%[[RELU]], %{{.*}})
  // CHECK-NEXT:  func.return %[[Y]]
  func.func @main(%x: tensor<2x3xf32>) -> tensor<6xf32> {
    %w = onnx.weight @w : tensor<2x3xf32>
    %s = onnx.weight @shape : tensor<1xi64>
    %a = "onnx.Add"(%x, %w) {onnx_node_name = "add"} : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    %r = "onnx.Relu"(%a) {onnx_node_name = "relu"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %y = "onnx.Reshape"(%r, %s) {onnx_node_name = "flat"} : (tensor<2x3xf32>, tensor<1xi64>) -> tensor<6xf32>
    func.return %y : tensor<6xf32>
  }

  // Weights and views only: no kernel to form.
  // CHECK-LABEL: func.func @preserve_views
  // CHECK-NOT:   kernel.launch
  // CHECK:       func.return
  func.func @preserve_views(%x: tensor<2x3xf32>) -> tensor<6xf32> {
    %s = onnx.weight @shape : tensor<1xi64>
    %y = "onnx.Reshape"(%x, %s) {onnx_node_name = "flat"} : (tensor<2x3xf32>, tensor<1xi64>) -> tensor<6xf32>
    func.return %y : tensor<6xf32>
  }

  // An op already in a kernel is not wrapped again.
  // CHECK-LABEL: func.func @preserve_formed
  // CHECK:       kernel.launch @k7_Relu on "cpu" nodes ["relu"]
  // CHECK-NEXT:    "onnx.Relu"
  // CHECK-NEXT:    kernel.yield
  // CHECK-NEXT:  }
  // CHECK-NEXT:  func.return
  func.func @preserve_formed(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %k = kernel.launch @k7_Relu on "cpu" nodes ["relu"] -> (tensor<2x3xf32>) {
      %r = "onnx.Relu"(%x) {onnx_node_name = "relu"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
      kernel.yield %r : tensor<2x3xf32>
    }
    func.return %k : tensor<2x3xf32>
  }
}
