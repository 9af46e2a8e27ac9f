// RUN: dlc opt %s -p form-kernels | filecheck %s

// Each compute op gets its own kernel.launch on the module's target; the view
// op (Reshape) stays outside, since it moves no data.

builtin.module attributes {dlc.target = "cpu"} {
  func.func @main(%x: tensor<2x3xf32>) -> tensor<6xf32> {
    %w = onnx.weight @w : tensor<2x3xf32>
    %s = onnx.weight @shape : tensor<1xi64>
    %a = "onnx.Add"(%x, %w) {onnx_node_name = "add"} : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    %r = "onnx.Relu"(%a) {onnx_node_name = "relu"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %y = "onnx.Reshape"(%r, %s) {onnx_node_name = "flat"} : (tensor<2x3xf32>, tensor<1xi64>) -> tensor<6xf32>
    func.return %y : tensor<6xf32>
  }
}

// CHECK:      %[[ADD:.*]] = "kernel.launch"() <{sym_name = "k0_Add", target = "cpu"}> ({
// CHECK-NEXT:   %[[A:.*]] = "onnx.Add"
// CHECK-NEXT:   "kernel.yield"(%[[A]])
// CHECK-NEXT: }) {nodes = ["add"]}
// CHECK:      %[[RELU:.*]] = "kernel.launch"() <{sym_name = "k1_Relu", target = "cpu"}> ({
// CHECK-NEXT:   %[[R:.*]] = "onnx.Relu"(%[[ADD]])
// CHECK:      }) {nodes = ["relu"]}
// CHECK:      "onnx.Reshape"(%[[RELU]], %{{.*}})
// CHECK-NOT:  kernel.launch
