// RUN: python %S/../npz.py %t.weights.npz "e=np.ones((8, 4, 1, 1), np.float32)" "d=np.ones((8, 1, 3, 3), np.float32)" "f=np.ones((8, 8, 3, 3), np.float32)" "lo=np.float32(0)" "hi=np.float32(6)"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p mark-depthwise-feeders | filecheck %s

// A 1x1 conv whose output only depthwise convs read, through elementwise ops, is marked
// dlc.feeds_depthwise (its threads then split output channels, as the depthwise conv's do).

builtin.module {
  // Expand, ReLU6, depthwise: MobileNetV2's inverted residual.
  // CHECK-LABEL: func.func @relu6_between
  // CHECK:       "onnx.Conv"({{.*}}) {onnx_node_name = "expand", dlc.feeds_depthwise}
  // CHECK:       "onnx.Conv"({{.*}}) {group = 8 : i64, onnx_node_name = "depthwise"}
  func.func @relu6_between(%x: tensor<1x4x6x6xf32>) -> tensor<1x8x4x4xf32> {
    %e = onnx.weight @e : tensor<8x4x1x1xf32>
    %d = onnx.weight @d : tensor<8x1x3x3xf32>
    %lo = onnx.weight @lo : tensor<f32>
    %hi = onnx.weight @hi : tensor<f32>
    %c = "onnx.Conv"(%x, %e) {onnx_node_name = "expand"} : (tensor<1x4x6x6xf32>, tensor<8x4x1x1xf32>) -> tensor<1x8x6x6xf32>
    %r = "onnx.Clip"(%c, %lo, %hi) {onnx_node_name = "relu6"} : (tensor<1x8x6x6xf32>, tensor<f32>, tensor<f32>) -> tensor<1x8x6x6xf32>
    %y = "onnx.Conv"(%r, %d) {group = 8 : i64, onnx_node_name = "depthwise"} : (tensor<1x8x6x6xf32>, tensor<8x1x3x3xf32>) -> tensor<1x8x4x4xf32>
    func.return %y : tensor<1x8x4x4xf32>
  }

  // SiLU (x * Sigmoid(x)) between them, as EfficientNet has: two uses, both elementwise.
  // CHECK-LABEL: func.func @silu_between
  // CHECK:       "onnx.Conv"({{.*}}) {onnx_node_name = "expand", dlc.feeds_depthwise}
  func.func @silu_between(%x: tensor<1x4x6x6xf32>) -> tensor<1x8x4x4xf32> {
    %e = onnx.weight @e : tensor<8x4x1x1xf32>
    %d = onnx.weight @d : tensor<8x1x3x3xf32>
    %c = "onnx.Conv"(%x, %e) {onnx_node_name = "expand"} : (tensor<1x4x6x6xf32>, tensor<8x4x1x1xf32>) -> tensor<1x8x6x6xf32>
    %s = "onnx.Sigmoid"(%c) {onnx_node_name = "sigmoid"} : (tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %m = "onnx.Mul"(%c, %s) {onnx_node_name = "silu"} : (tensor<1x8x6x6xf32>, tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %y = "onnx.Conv"(%m, %d) {group = 8 : i64, onnx_node_name = "depthwise"} : (tensor<1x8x6x6xf32>, tensor<8x1x3x3xf32>) -> tensor<1x8x4x4xf32>
    func.return %y : tensor<1x8x4x4xf32>
  }

  // Also read by something else (here returned): not marked. Nor a 1x1 conv that a full
  // conv reads, nor one that is itself depthwise-fed but not 1x1.
  // CHECK-LABEL: func.func @not_only_depthwise
  // CHECK-NOT:   dlc.feeds_depthwise
  // CHECK:       func.return
  func.func @not_only_depthwise(%x: tensor<1x4x6x6xf32>) -> (tensor<1x8x6x6xf32>, tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>) {
    %e = onnx.weight @e : tensor<8x4x1x1xf32>
    %d = onnx.weight @d : tensor<8x1x3x3xf32>
    %f = onnx.weight @f : tensor<8x8x3x3xf32>
    %c = "onnx.Conv"(%x, %e) {onnx_node_name = "expand"} : (tensor<1x4x6x6xf32>, tensor<8x4x1x1xf32>) -> tensor<1x8x6x6xf32>
    %y = "onnx.Conv"(%c, %d) {group = 8 : i64, onnx_node_name = "depthwise"} : (tensor<1x8x6x6xf32>, tensor<8x1x3x3xf32>) -> tensor<1x8x4x4xf32>
    %c2 = "onnx.Conv"(%x, %e) {onnx_node_name = "expand_for_full"} : (tensor<1x4x6x6xf32>, tensor<8x4x1x1xf32>) -> tensor<1x8x6x6xf32>
    %z = "onnx.Conv"(%c2, %f) {onnx_node_name = "full"} : (tensor<1x8x6x6xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x4x4xf32>
    func.return %c, %y, %z : tensor<1x8x6x6xf32>, tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>
  }
}
