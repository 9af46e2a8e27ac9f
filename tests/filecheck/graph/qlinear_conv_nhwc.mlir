// RUN: python %S/../npz.py %t.weights.npz "xs=np.float32(0.25)" "xz=np.uint8(128)" "w1=np.arange(72, dtype=np.int8).reshape(4, 2, 3, 3) - 36" "w2=np.ones((4, 4, 1, 1), np.uint8) * 130" "ws=np.full(4, 0.5, np.float32)" "wz=np.zeros(4, np.int8)" "wz2=np.uint8(128)" "ys=np.float32(2.0)" "yz=np.uint8(3)" "wg=np.ones((4, 1, 3, 3), np.int8)" "wg2=np.ones((4, 2, 3, 3), np.int8)" "g=np.full(4, 1.5, np.float32)" "b=np.full(4, 0.25, np.float32)" "m=np.full(4, -0.5, np.float32)" "v=np.full(4, 4.0, np.float32)" "yz4=np.full(4, 3, np.uint8)"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p qlinear-conv-nhwc | filecheck %s

// QLinearConvs on the integer GEMM read and write NHWC between Transposes; a conv reading
// another's NHWC result takes it directly; a uint8 weight with zero point 128 becomes the int8
// weight w - 128 (zero point 0), in [CO, KH, KW, C]; the last writes NCHW itself, as only a
// Transpose back to NCHW reads it. A depthwise conv's weight becomes
// [1, KH, KW, C]; a grouped conv that is not depthwise goes to NHWC too, its weight as
// [CO, KH, KW, C/G] (the lowering runs one integer GEMM per group). A BatchNormalization between
// two such convs, behind a per-tensor DequantizeLinear, becomes Sub/Mul/Add by [C] weights in
// NHWC (factor = scale / sqrt(var + epsilon)), so the Transposes around it cancel; behind a
// per-axis DequantizeLinear it stays in NCHW.

builtin.module {
  // CHECK-LABEL: func.func @chain
  // CHECK-SAME:  (%[[X:.*]]: tensor<1x2x5x5xui8>)
  // CHECK:       %[[T:.*]] = "onnx.Transpose"(%[[X]]) {perm = array<i64: 0, 2, 3, 1>, onnx_node_name = "c1.to_nhwc"} {{.*}} -> tensor<1x5x5x2xui8>
  // CHECK:       %[[W1:.*]] = onnx.weight @c1.w_ohwi : tensor<4x3x3x2xi8>
  // CHECK:       %[[Y1:.*]] = "onnx.QLinearConv"(%[[T]], %{{.*}}, %{{.*}}, %[[W1]], {{.*}} dlc.layout = "NHWC"} {{.*}} -> tensor<1x5x5x4xui8>
  // CHECK-NOT:   "onnx.Transpose"
  // CHECK:       %[[W2:.*]] = onnx.weight @c2.w_ohwi : tensor<4x1x1x4xi8>
  // CHECK:       %[[Z2:.*]] = onnx.weight @c2.w_zero0 : tensor<i8>
  // CHECK:       %[[Y2:.*]] = "onnx.QLinearConv"(%[[Y1]], %{{.*}}, %{{.*}}, %[[W2]], %{{.*}}, %[[Z2]], {{.*}} dlc.layout = "NHWC", dlc.y_layout = "NCHW"} {{.*}} -> tensor<1x4x5x5xui8>
  // CHECK-NEXT:  func.return %[[Y2]]
  func.func @chain(%x: tensor<1x2x5x5xui8>) -> tensor<1x4x5x5xui8> {
    %xs = onnx.weight @xs : tensor<f32>
    %xz = onnx.weight @xz : tensor<ui8>
    %w1 = onnx.weight @w1 : tensor<4x2x3x3xi8>
    %ws = onnx.weight @ws : tensor<4xf32>
    %wz = onnx.weight @wz : tensor<4xi8>
    %ys = onnx.weight @ys : tensor<f32>
    %yz = onnx.weight @yz : tensor<ui8>
    %y1 = "onnx.QLinearConv"(%x, %xs, %xz, %w1, %ws, %wz, %ys, %yz) {pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "c1"} : (tensor<1x2x5x5xui8>, tensor<f32>, tensor<ui8>, tensor<4x2x3x3xi8>, tensor<4xf32>, tensor<4xi8>, tensor<f32>, tensor<ui8>) -> tensor<1x4x5x5xui8>
    %w2 = onnx.weight @w2 : tensor<4x4x1x1xui8>
    %wz2 = onnx.weight @wz2 : tensor<ui8>
    %y2 = "onnx.QLinearConv"(%y1, %ys, %yz, %w2, %ws, %wz2, %ys, %yz) {onnx_node_name = "c2"} : (tensor<1x4x5x5xui8>, tensor<f32>, tensor<ui8>, tensor<4x4x1x1xui8>, tensor<4xf32>, tensor<ui8>, tensor<f32>, tensor<ui8>) -> tensor<1x4x5x5xui8>
    func.return %y2 : tensor<1x4x5x5xui8>
  }

  // CHECK-LABEL: func.func @depthwise
  // CHECK:       "onnx.Transpose"
  // CHECK:       onnx.weight @dw.w_1hwc : tensor<1x3x3x4xi8>
  // CHECK:       "onnx.QLinearConv"{{.*}}group = 4 : i64{{.*}}dlc.layout = "NHWC"{{.*}} -> tensor<1x5x5x4xui8>
  // CHECK:       "onnx.Transpose"
  func.func @depthwise(%x: tensor<1x4x5x5xui8>) -> tensor<1x4x5x5xui8> {
    %xs = onnx.weight @xs : tensor<f32>
    %xz = onnx.weight @xz : tensor<ui8>
    %w = onnx.weight @wg : tensor<4x1x3x3xi8>
    %ws = onnx.weight @ws : tensor<4xf32>
    %wz = onnx.weight @wz : tensor<4xi8>
    %ys = onnx.weight @ys : tensor<f32>
    %yz = onnx.weight @yz : tensor<ui8>
    %y = "onnx.QLinearConv"(%x, %xs, %xz, %w, %ws, %wz, %ys, %yz) {group = 4 : i64, pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "dw"} : (tensor<1x4x5x5xui8>, tensor<f32>, tensor<ui8>, tensor<4x1x3x3xi8>, tensor<4xf32>, tensor<4xi8>, tensor<f32>, tensor<ui8>) -> tensor<1x4x5x5xui8>
    func.return %y : tensor<1x4x5x5xui8>
  }

  // CHECK-LABEL: func.func @grouped
  // CHECK:       "onnx.Transpose"{{.*}} -> tensor<1x5x5x8xui8>
  // CHECK:       onnx.weight @g.w_ohwi : tensor<4x3x3x2xi8>
  // CHECK:       "onnx.QLinearConv"{{.*}}group = 4 : i64{{.*}}dlc.layout = "NHWC"{{.*}} -> tensor<1x5x5x4xui8>
  // CHECK:       "onnx.Transpose"{{.*}} -> tensor<1x4x5x5xui8>
  func.func @grouped(%x: tensor<1x8x5x5xui8>) -> tensor<1x4x5x5xui8> {
    %xs = onnx.weight @xs : tensor<f32>
    %xz = onnx.weight @xz : tensor<ui8>
    %w = onnx.weight @wg2 : tensor<4x2x3x3xi8>
    %ws = onnx.weight @ws : tensor<4xf32>
    %wz = onnx.weight @wz : tensor<4xi8>
    %ys = onnx.weight @ys : tensor<f32>
    %yz = onnx.weight @yz : tensor<ui8>
    %y = "onnx.QLinearConv"(%x, %xs, %xz, %w, %ws, %wz, %ys, %yz) {group = 4 : i64, pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "g"} : (tensor<1x8x5x5xui8>, tensor<f32>, tensor<ui8>, tensor<4x2x3x3xi8>, tensor<4xf32>, tensor<4xi8>, tensor<f32>, tensor<ui8>) -> tensor<1x4x5x5xui8>
    func.return %y : tensor<1x4x5x5xui8>
  }

  // CHECK-LABEL: func.func @batchnorm
  // CHECK:       %[[Y1:.*]] = "onnx.QLinearConv"({{.*}}dlc.layout = "NHWC"} {{.*}} -> tensor<1x5x5x4xui8>
  // CHECK:       %[[D:.*]] = "onnx.DequantizeLinear"(%[[Y1]], {{.*}} -> tensor<1x5x5x4xf32>
  // CHECK-NEXT:  %[[MEAN:.*]] = onnx.weight @bn.mean_nhwc : tensor<4xf32>
  // CHECK-NEXT:  %[[S:.*]] = "onnx.Sub"(%[[D]], %[[MEAN]]) {{.*}} -> tensor<1x5x5x4xf32>
  // CHECK-NEXT:  %[[F:.*]] = onnx.weight @bn.factor_nhwc : tensor<4xf32>
  // CHECK-NEXT:  %[[M:.*]] = "onnx.Mul"(%[[S]], %[[F]]) {{.*}} -> tensor<1x5x5x4xf32>
  // CHECK-NEXT:  %[[B:.*]] = onnx.weight @bn.bias_nhwc : tensor<4xf32>
  // CHECK-NEXT:  %[[A:.*]] = "onnx.Add"(%[[M]], %[[B]]) {{.*}} -> tensor<1x5x5x4xf32>
  // CHECK-NEXT:  %[[Q:.*]] = "onnx.QuantizeLinear"(%[[A]], {{.*}} -> tensor<1x5x5x4xui8>
  // CHECK-NOT:   "onnx.Transpose"
  // CHECK-NOT:   onnx.BatchNormalization
  // CHECK:       "onnx.QLinearConv"(%[[Q]], {{.*}}dlc.layout = "NHWC", dlc.y_layout = "NCHW"} {{.*}} -> tensor<1x4x5x5xui8>
  func.func @batchnorm(%x: tensor<1x2x5x5xui8>) -> tensor<1x4x5x5xui8> {
    %xs = onnx.weight @xs : tensor<f32>
    %xz = onnx.weight @xz : tensor<ui8>
    %w1 = onnx.weight @w1 : tensor<4x2x3x3xi8>
    %ws = onnx.weight @ws : tensor<4xf32>
    %wz = onnx.weight @wz : tensor<4xi8>
    %ys = onnx.weight @ys : tensor<f32>
    %yz = onnx.weight @yz : tensor<ui8>
    %y1 = "onnx.QLinearConv"(%x, %xs, %xz, %w1, %ws, %wz, %ys, %yz) {pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "c1"} : (tensor<1x2x5x5xui8>, tensor<f32>, tensor<ui8>, tensor<4x2x3x3xi8>, tensor<4xf32>, tensor<4xi8>, tensor<f32>, tensor<ui8>) -> tensor<1x4x5x5xui8>
    %d = "onnx.DequantizeLinear"(%y1, %ys, %yz) {onnx_node_name = "dq"} : (tensor<1x4x5x5xui8>, tensor<f32>, tensor<ui8>) -> tensor<1x4x5x5xf32>
    %g = onnx.weight @g : tensor<4xf32>
    %b = onnx.weight @b : tensor<4xf32>
    %m = onnx.weight @m : tensor<4xf32>
    %v = onnx.weight @v : tensor<4xf32>
    %n = "onnx.BatchNormalization"(%d, %g, %b, %m, %v) {onnx_node_name = "bn"} : (tensor<1x4x5x5xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x5x5xf32>
    %q = "onnx.QuantizeLinear"(%n, %ys, %yz) {onnx_node_name = "q"} : (tensor<1x4x5x5xf32>, tensor<f32>, tensor<ui8>) -> tensor<1x4x5x5xui8>
    %y2 = "onnx.QLinearConv"(%q, %ys, %yz, %w1, %ws, %wz, %ys, %yz) {pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "c2"} : (tensor<1x4x5x5xui8>, tensor<f32>, tensor<ui8>, tensor<4x2x3x3xi8>, tensor<4xf32>, tensor<4xi8>, tensor<f32>, tensor<ui8>) -> tensor<1x4x5x5xui8>
    func.return %y2 : tensor<1x4x5x5xui8>
  }

  // CHECK-LABEL: func.func @batchnorm_per_axis
  // CHECK:       "onnx.QLinearConv"{{.*}}dlc.layout = "NHWC", dlc.y_layout = "NCHW"{{.*}} -> tensor<1x4x5x5xui8>
  // CHECK:       %[[PD:.*]] = "onnx.DequantizeLinear"{{.*}} -> tensor<1x4x5x5xf32>
  // CHECK:       "onnx.BatchNormalization"(%[[PD]],
  func.func @batchnorm_per_axis(%x: tensor<1x2x5x5xui8>) -> tensor<1x4x5x5xf32> {
    %xs = onnx.weight @xs : tensor<f32>
    %xz = onnx.weight @xz : tensor<ui8>
    %w1 = onnx.weight @w1 : tensor<4x2x3x3xi8>
    %ws = onnx.weight @ws : tensor<4xf32>
    %wz = onnx.weight @wz : tensor<4xi8>
    %ys = onnx.weight @ys : tensor<f32>
    %yz = onnx.weight @yz : tensor<ui8>
    %yz4 = onnx.weight @yz4 : tensor<4xui8>
    %y1 = "onnx.QLinearConv"(%x, %xs, %xz, %w1, %ws, %wz, %ys, %yz) {pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "c1"} : (tensor<1x2x5x5xui8>, tensor<f32>, tensor<ui8>, tensor<4x2x3x3xi8>, tensor<4xf32>, tensor<4xi8>, tensor<f32>, tensor<ui8>) -> tensor<1x4x5x5xui8>
    %d = "onnx.DequantizeLinear"(%y1, %ws, %yz4) {axis = 1 : i64, onnx_node_name = "dq"} : (tensor<1x4x5x5xui8>, tensor<4xf32>, tensor<4xui8>) -> tensor<1x4x5x5xf32>
    %g = onnx.weight @g : tensor<4xf32>
    %b = onnx.weight @b : tensor<4xf32>
    %m = onnx.weight @m : tensor<4xf32>
    %v = onnx.weight @v : tensor<4xf32>
    %n = "onnx.BatchNormalization"(%d, %g, %b, %m, %v) {onnx_node_name = "bn"} : (tensor<1x4x5x5xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x5x5xf32>
    func.return %n : tensor<1x4x5x5xf32>
  }
}
