// RUN: dlc opt %s -p sink-transposes | filecheck %s

// Transposes move below elementwise ops when every tensor operand is had in their input layout
// for free, and opposite ones then cancel: a residual DequantizeLinear -> Add -> QuantizeLinear
// between two NHWC integer convs runs in NHWC. A per-axis DequantizeLinear's axis follows its
// dimension. A Transpose stays where only a non-elementwise op would read the moved result.

builtin.module {
  // The Add's other operand is DequantizeLinear(x), whose x another Transpose already brings to
  // NHWC: it is rebuilt on that Transpose; the Transpose back to NCHW meets the one to NHWC.
  // CHECK-LABEL: func.func @residual
  // CHECK-SAME:  (%[[A:.*]]: tensor<1x4x5x2xui8>, %[[X:.*]]: tensor<1x2x4x5xui8>, %[[S:.*]]: tensor<f32>, %[[Z:.*]]: tensor<ui8>)
  // CHECK:       %[[XT:.*]] = "onnx.Transpose"(%[[X]]) {perm = array<i64: 0, 2, 3, 1>
  // CHECK:       %[[DA:.*]] = "onnx.DequantizeLinear"(%[[A]], %[[S]], %[[Z]]) {{.*}} -> tensor<1x4x5x2xf32>
  // CHECK:       %[[DX:.*]] = "onnx.DequantizeLinear"(%[[XT]], %[[S]], %[[Z]]) {{.*}} -> tensor<1x4x5x2xf32>
  // CHECK:       %[[SUM:.*]] = "onnx.Add"(%[[DA]], %[[DX]]) {{.*}} -> tensor<1x4x5x2xf32>
  // CHECK:       %[[Q:.*]] = "onnx.QuantizeLinear"(%[[SUM]], %[[S]], %[[Z]]) {{.*}} -> tensor<1x4x5x2xui8>
  // CHECK-NOT:   onnx.Transpose
  // CHECK:       func.return %[[Q]], %[[XT]]
  func.func @residual(%a: tensor<1x4x5x2xui8>, %x: tensor<1x2x4x5xui8>, %s: tensor<f32>, %z: tensor<ui8>) -> (tensor<1x4x5x2xui8>, tensor<1x4x5x2xui8>) {
    %xt = "onnx.Transpose"(%x) {perm = array<i64: 0, 2, 3, 1>, onnx_node_name = "x.to_nhwc"} : (tensor<1x2x4x5xui8>) -> tensor<1x4x5x2xui8>
    %at = "onnx.Transpose"(%a) {perm = array<i64: 0, 3, 1, 2>, onnx_node_name = "a.to_nchw"} : (tensor<1x4x5x2xui8>) -> tensor<1x2x4x5xui8>
    %da = "onnx.DequantizeLinear"(%at, %s, %z) {onnx_node_name = "da"} : (tensor<1x2x4x5xui8>, tensor<f32>, tensor<ui8>) -> tensor<1x2x4x5xf32>
    %dx = "onnx.DequantizeLinear"(%x, %s, %z) {onnx_node_name = "dx"} : (tensor<1x2x4x5xui8>, tensor<f32>, tensor<ui8>) -> tensor<1x2x4x5xf32>
    %sum = "onnx.Add"(%da, %dx) {onnx_node_name = "add"} : (tensor<1x2x4x5xf32>, tensor<1x2x4x5xf32>) -> tensor<1x2x4x5xf32>
    %q = "onnx.QuantizeLinear"(%sum, %s, %z) {onnx_node_name = "q"} : (tensor<1x2x4x5xf32>, tensor<f32>, tensor<ui8>) -> tensor<1x2x4x5xui8>
    %qt = "onnx.Transpose"(%q) {perm = array<i64: 0, 2, 3, 1>, onnx_node_name = "q.to_nhwc"} : (tensor<1x2x4x5xui8>) -> tensor<1x4x5x2xui8>
    func.return %qt, %xt : tensor<1x4x5x2xui8>, tensor<1x4x5x2xui8>
  }

  // Per channel: axis 1 of the NCHW tensor is axis 3 of the NHWC one.
  // CHECK-LABEL: func.func @per_axis
  // CHECK-SAME:  (%[[A:.*]]: tensor<1x4x5x2xi8>, %[[S:.*]]: tensor<2xf32>)
  // CHECK-NEXT:  %[[D:.*]] = "onnx.DequantizeLinear"(%[[A]], %[[S]]) {axis = 3 : i64{{.*}} -> tensor<1x4x5x2xf32>
  // CHECK-NEXT:  %[[R:.*]] = "onnx.Relu"(%[[D]]) {{.*}} -> tensor<1x4x5x2xf32>
  // CHECK-NEXT:  func.return %[[R]]
  func.func @per_axis(%a: tensor<1x4x5x2xi8>, %s: tensor<2xf32>) -> tensor<1x4x5x2xf32> {
    %at = "onnx.Transpose"(%a) {perm = array<i64: 0, 3, 1, 2>, onnx_node_name = "a.to_nchw"} : (tensor<1x4x5x2xi8>) -> tensor<1x2x4x5xi8>
    %d = "onnx.DequantizeLinear"(%at, %s) {axis = 1 : i64, onnx_node_name = "d"} : (tensor<1x2x4x5xi8>, tensor<2xf32>) -> tensor<1x2x4x5xf32>
    %r = "onnx.Relu"(%d) {onnx_node_name = "relu"} : (tensor<1x2x4x5xf32>) -> tensor<1x2x4x5xf32>
    %rt = "onnx.Transpose"(%r) {perm = array<i64: 0, 2, 3, 1>, onnx_node_name = "r.to_nhwc"} : (tensor<1x2x4x5xf32>) -> tensor<1x4x5x2xf32>
    func.return %rt : tensor<1x4x5x2xf32>
  }

  // Only a pooling reads the DequantizeLinear: the Transpose stays on the uint8 tensor.
  // CHECK-LABEL: func.func @stops_before_pool
  // CHECK:       "onnx.Transpose"
  // CHECK-NEXT:  "onnx.DequantizeLinear"{{.*}} -> tensor<1x2x4x5xf32>
  // CHECK-NEXT:  "onnx.GlobalAveragePool"
  func.func @stops_before_pool(%a: tensor<1x4x5x2xui8>, %s: tensor<f32>, %z: tensor<ui8>) -> tensor<1x2x1x1xf32> {
    %at = "onnx.Transpose"(%a) {perm = array<i64: 0, 3, 1, 2>, onnx_node_name = "a.to_nchw"} : (tensor<1x4x5x2xui8>) -> tensor<1x2x4x5xui8>
    %d = "onnx.DequantizeLinear"(%at, %s, %z) {onnx_node_name = "d"} : (tensor<1x2x4x5xui8>, tensor<f32>, tensor<ui8>) -> tensor<1x2x4x5xf32>
    %g = "onnx.GlobalAveragePool"(%d) {onnx_node_name = "pool"} : (tensor<1x2x4x5xf32>) -> tensor<1x2x1x1xf32>
    func.return %g : tensor<1x2x1x1xf32>
  }

  // The other operand of the Add is in NCHW only: nothing moves (a new Transpose on it would
  // cost what the moved one saves).
  // CHECK-LABEL: func.func @other_operand_nchw
  // CHECK:       "onnx.Transpose"
  // CHECK-NEXT:  "onnx.Add"{{.*}} -> tensor<1x2x4x5xf32>
  // CHECK-NEXT:  "onnx.Transpose"
  func.func @other_operand_nchw(%a: tensor<1x4x5x2xf32>, %b: tensor<1x2x4x5xf32>) -> tensor<1x4x5x2xf32> {
    %at = "onnx.Transpose"(%a) {perm = array<i64: 0, 3, 1, 2>, onnx_node_name = "a.to_nchw"} : (tensor<1x4x5x2xf32>) -> tensor<1x2x4x5xf32>
    %sum = "onnx.Add"(%at, %b) {onnx_node_name = "add"} : (tensor<1x2x4x5xf32>, tensor<1x2x4x5xf32>) -> tensor<1x2x4x5xf32>
    %st = "onnx.Transpose"(%sum) {perm = array<i64: 0, 2, 3, 1>, onnx_node_name = "s.to_nhwc"} : (tensor<1x2x4x5xf32>) -> tensor<1x4x5x2xf32>
    func.return %st : tensor<1x4x5x2xf32>
  }

  // A unary op of the operand's size (a Relu) takes the Transpose below it even when only a
  // pooling reads its result: the data moved is the same, and the Relu may then join its
  // producer's kernel (a conv's GEMM applies it as it stores).
  // CHECK-LABEL: func.func @below_relu
  // CHECK:       "onnx.Relu"{{.*}} -> tensor<1x4x5x2xf32>
  // CHECK-NEXT:  "onnx.Transpose"
  // CHECK-NEXT:  "onnx.GlobalAveragePool"
  func.func @below_relu(%a: tensor<1x4x5x2xf32>) -> tensor<1x2x1x1xf32> {
    %at = "onnx.Transpose"(%a) {perm = array<i64: 0, 3, 1, 2>, onnx_node_name = "a.to_nchw"} : (tensor<1x4x5x2xf32>) -> tensor<1x2x4x5xf32>
    %r = "onnx.Relu"(%at) {onnx_node_name = "relu"} : (tensor<1x2x4x5xf32>) -> tensor<1x2x4x5xf32>
    %g = "onnx.GlobalAveragePool"(%r) {onnx_node_name = "pool"} : (tensor<1x2x4x5xf32>) -> tensor<1x2x1x1xf32>
    func.return %g : tensor<1x2x1x1xf32>
  }
  // A SiLU, x * Sigmoid(x): the Transpose feeds both the Sigmoid and the Mul, and the Sigmoid
  // only the Mul; the two move together and the Transposes cancel.
  // CHECK-LABEL: func.func @silu
  // CHECK-SAME:  (%[[A:.*]]: tensor<1x4x5x2xf32>)
  // CHECK-NEXT:  %[[G:.*]] = "onnx.Sigmoid"(%[[A]]) {{.*}} -> tensor<1x4x5x2xf32>
  // CHECK-NEXT:  %[[Y:.*]] = "onnx.Mul"(%[[A]], %[[G]]) {{.*}} -> tensor<1x4x5x2xf32>
  // CHECK-NEXT:  func.return %[[Y]]
  func.func @silu(%a: tensor<1x4x5x2xf32>) -> tensor<1x4x5x2xf32> {
    %at = "onnx.Transpose"(%a) {perm = array<i64: 0, 3, 1, 2>, onnx_node_name = "a.to_nchw"} : (tensor<1x4x5x2xf32>) -> tensor<1x2x4x5xf32>
    %g = "onnx.Sigmoid"(%at) {onnx_node_name = "gate"} : (tensor<1x2x4x5xf32>) -> tensor<1x2x4x5xf32>
    %y = "onnx.Mul"(%at, %g) {onnx_node_name = "silu"} : (tensor<1x2x4x5xf32>, tensor<1x2x4x5xf32>) -> tensor<1x2x4x5xf32>
    %yt = "onnx.Transpose"(%y) {perm = array<i64: 0, 2, 3, 1>, onnx_node_name = "y.to_nhwc"} : (tensor<1x2x4x5xf32>) -> tensor<1x4x5x2xf32>
    func.return %yt : tensor<1x4x5x2xf32>
  }

  // Returned as it is too, the Transpose stays: the Mul does not move past it.
  // CHECK-LABEL: func.func @silu_transpose_returned
  // CHECK:       "onnx.Transpose"(%{{.*}}) {perm = array<i64: 0, 3, 1, 2>
  // CHECK:       "onnx.Mul"({{.*}}) {{.*}} -> tensor<1x2x4x5xf32>
  // CHECK:       "onnx.Transpose"
  func.func @silu_transpose_returned(%a: tensor<1x4x5x2xf32>) -> (tensor<1x4x5x2xf32>, tensor<1x2x4x5xf32>) {
    %at = "onnx.Transpose"(%a) {perm = array<i64: 0, 3, 1, 2>, onnx_node_name = "a.to_nchw"} : (tensor<1x4x5x2xf32>) -> tensor<1x2x4x5xf32>
    %g = "onnx.Sigmoid"(%at) {onnx_node_name = "gate"} : (tensor<1x2x4x5xf32>) -> tensor<1x2x4x5xf32>
    %y = "onnx.Mul"(%at, %g) {onnx_node_name = "silu"} : (tensor<1x2x4x5xf32>, tensor<1x2x4x5xf32>) -> tensor<1x2x4x5xf32>
    %yt = "onnx.Transpose"(%y) {perm = array<i64: 0, 2, 3, 1>, onnx_node_name = "y.to_nhwc"} : (tensor<1x2x4x5xf32>) -> tensor<1x4x5x2xf32>
    func.return %yt, %at : tensor<1x4x5x2xf32>, tensor<1x2x4x5xf32>
  }
  // A squeeze-and-excitation Mul: its gate [1, 2, 1, 1] is broadcast over the map. The map's
  // Transpose moves below the Mul, the gate taking a Transpose of its own (2 elements, here
  // cancelling the one that brought it to NCHW); the Transposes of the map cancel.
  // CHECK-LABEL: func.func @broadcast_gate
  // CHECK-SAME:  (%[[A:.*]]: tensor<1x4x5x2xf32>, %[[G:.*]]: tensor<1x1x1x2xf32>)
  // CHECK-NEXT:  %[[Y:.*]] = "onnx.Mul"(%[[A]], %[[G]]) {{.*}} : (tensor<1x4x5x2xf32>, tensor<1x1x1x2xf32>) -> tensor<1x4x5x2xf32>
  // CHECK-NEXT:  func.return %[[Y]]
  func.func @broadcast_gate(%a: tensor<1x4x5x2xf32>, %g: tensor<1x1x1x2xf32>) -> tensor<1x4x5x2xf32> {
    %at = "onnx.Transpose"(%a) {perm = array<i64: 0, 3, 1, 2>, onnx_node_name = "a.to_nchw"} : (tensor<1x4x5x2xf32>) -> tensor<1x2x4x5xf32>
    %gt = "onnx.Transpose"(%g) {perm = array<i64: 0, 3, 1, 2>, onnx_node_name = "g.to_nchw"} : (tensor<1x1x1x2xf32>) -> tensor<1x2x1x1xf32>
    %y = "onnx.Mul"(%at, %gt) {onnx_node_name = "excite"} : (tensor<1x2x4x5xf32>, tensor<1x2x1x1xf32>) -> tensor<1x2x4x5xf32>
    %yt = "onnx.Transpose"(%y) {perm = array<i64: 0, 2, 3, 1>, onnx_node_name = "y.to_nhwc"} : (tensor<1x2x4x5xf32>) -> tensor<1x4x5x2xf32>
    func.return %yt : tensor<1x4x5x2xf32>
  }

  // A gate from elsewhere gets a Transpose of its own.
  // CHECK-LABEL: func.func @broadcast_gate_transposed
  // CHECK-SAME:  (%[[A:.*]]: tensor<1x4x5x2xf32>, %[[G:.*]]: tensor<1x2x1x1xf32>)
  // CHECK-NEXT:  %[[GT:.*]] = "onnx.Transpose"(%[[G]]) {perm = array<i64: 0, 2, 3, 1>} : (tensor<1x2x1x1xf32>) -> tensor<1x1x1x2xf32>
  // CHECK-NEXT:  %[[Y:.*]] = "onnx.Mul"(%[[A]], %[[GT]]) {{.*}} -> tensor<1x4x5x2xf32>
  // CHECK-NEXT:  func.return %[[Y]]
  func.func @broadcast_gate_transposed(%a: tensor<1x4x5x2xf32>, %g: tensor<1x2x1x1xf32>) -> tensor<1x4x5x2xf32> {
    %at = "onnx.Transpose"(%a) {perm = array<i64: 0, 3, 1, 2>, onnx_node_name = "a.to_nchw"} : (tensor<1x4x5x2xf32>) -> tensor<1x2x4x5xf32>
    %y = "onnx.Mul"(%at, %g) {onnx_node_name = "excite"} : (tensor<1x2x4x5xf32>, tensor<1x2x1x1xf32>) -> tensor<1x2x4x5xf32>
    %yt = "onnx.Transpose"(%y) {perm = array<i64: 0, 2, 3, 1>, onnx_node_name = "y.to_nhwc"} : (tensor<1x2x4x5xf32>) -> tensor<1x4x5x2xf32>
    func.return %yt : tensor<1x4x5x2xf32>
  }

  // An operand broadcast along one dim only, half the map's size: its Transpose would cost
  // about what moving the map's saves, so the Mul stays between the Transposes.
  // CHECK-LABEL: func.func @broadcast_too_large
  // CHECK:       "onnx.Transpose"
  // CHECK-NEXT:  "onnx.Mul"({{.*}}) {{.*}} : (tensor<1x2x4x5xf32>, tensor<1x1x4x5xf32>) -> tensor<1x2x4x5xf32>
  // CHECK-NEXT:  "onnx.Transpose"
  func.func @broadcast_too_large(%a: tensor<1x4x5x2xf32>, %r: tensor<1x1x4x5xf32>) -> tensor<1x4x5x2xf32> {
    %at = "onnx.Transpose"(%a) {perm = array<i64: 0, 3, 1, 2>, onnx_node_name = "a.to_nchw"} : (tensor<1x4x5x2xf32>) -> tensor<1x2x4x5xf32>
    %y = "onnx.Mul"(%at, %r) {onnx_node_name = "rows"} : (tensor<1x2x4x5xf32>, tensor<1x1x4x5xf32>) -> tensor<1x2x4x5xf32>
    %yt = "onnx.Transpose"(%y) {perm = array<i64: 0, 2, 3, 1>, onnx_node_name = "y.to_nhwc"} : (tensor<1x2x4x5xf32>) -> tensor<1x4x5x2xf32>
    func.return %yt : tensor<1x4x5x2xf32>
  }
}
