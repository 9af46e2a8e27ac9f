// RUN: python %S/../npz.py %t.weights.npz "w=np.ones((1, 2, 3), np.float32)" "r=np.ones((1, 2, 2), np.float32)" "lw=np.ones((1, 8, 3), np.float32)" "lr=np.ones((1, 8, 2), np.float32)"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p expand-recurrent | filecheck %s

// A recurrent node becomes one MatMul projecting every time step, then per step a
// slice of that projection, a MatMul by R^T and the gate math, in time order.

builtin.module {
  // CHECK-LABEL: func.func @rnn
  // CHECK-SAME:  (%[[X:.*]]: tensor<2x1x3xf32>)
  // CHECK-NOT:   onnx.RNN
  // CHECK:       %[[X2:.*]] = "onnx.Reshape"(%[[X]], %{{.*}}) {{.*}} -> tensor<2x3xf32>
  // CHECK:       %[[P:.*]] = "onnx.MatMul"(%[[X2]], %{{.*}}) {{.*}} -> tensor<2x2xf32>
  // CHECK:       %[[P3:.*]] = "onnx.Reshape"(%[[P]], %{{.*}}) {{.*}} -> tensor<2x1x2xf32>
  // CHECK:       %[[RT:.*]] = "onnx.Transpose"({{.*}}) {{.*}}perm = array<i64: 1, 0>
  // CHECK:       %[[H0:.*]] = onnx.weight @rnn.const{{.*}} : tensor<1x2xf32>
  // CHECK:       "onnx.Slice"(%[[P3]],
  // CHECK:       %[[M0:.*]] = "onnx.MatMul"(%[[H0]], %[[RT]])
  // CHECK:       %[[A0:.*]] = "onnx.Add"(%{{.*}}, %[[M0]])
  // CHECK:       %[[T0:.*]] = "onnx.Tanh"(%[[A0]])
  // CHECK:       "onnx.Slice"(%[[P3]],
  // CHECK:       %[[M1:.*]] = "onnx.MatMul"(%[[T0]], %[[RT]])
  // CHECK:       %[[A1:.*]] = "onnx.Add"(%{{.*}}, %[[M1]])
  // CHECK:       %[[T1:.*]] = "onnx.Tanh"(%[[A1]])
  // CHECK:       %[[Y0:.*]] = "onnx.Reshape"(%[[T0]], %{{.*}}) {{.*}} -> tensor<1x1x2xf32>
  // CHECK:       %[[Y1:.*]] = "onnx.Reshape"(%[[T1]], %{{.*}}) {{.*}} -> tensor<1x1x2xf32>
  // CHECK:       %[[C:.*]] = "onnx.Concat"(%[[Y0]], %[[Y1]]) {{.*}}axis = 0
  // CHECK:       %[[Y:.*]] = "onnx.Reshape"(%[[C]], %{{.*}}) {{.*}} -> tensor<2x1x1x2xf32>
  // CHECK:       func.return %[[Y]]
  func.func @rnn(%x: tensor<2x1x3xf32>) -> tensor<2x1x1x2xf32> {
    %w = onnx.weight @w : tensor<1x2x3xf32>
    %r = onnx.weight @r : tensor<1x2x2xf32>
    %y, %yh = "onnx.RNN"(%x, %w, %r) {hidden_size = 2 : i64, onnx_node_name = "rnn"} : (tensor<2x1x3xf32>, tensor<1x2x3xf32>, tensor<1x2x2xf32>) -> (tensor<2x1x1x2xf32>, tensor<1x1x2xf32>)
    func.return %y : tensor<2x1x1x2xf32>
  }

  // An LSTM whose Y is absent (a `none` result): its gates come from one Split of
  // the step's pre-activations, in the spec's order i, o, f, c.
  // CHECK-LABEL: func.func @lstm_no_y
  // CHECK-NOT:   onnx.LSTM
  // CHECK:       %[[I:.*]], %[[O:.*]], %[[F:.*]], %[[G:.*]] = "onnx.Split"
  // CHECK-DAG:   %[[SI:.*]] = "onnx.Sigmoid"(%[[I]])
  // CHECK-DAG:   %[[SF:.*]] = "onnx.Sigmoid"(%[[F]])
  // CHECK-DAG:   %[[TG:.*]] = "onnx.Tanh"(%[[G]])
  // CHECK:       %[[KEEP:.*]] = "onnx.Mul"(%[[SF]], %{{.*}})
  // CHECK:       %[[NEW:.*]] = "onnx.Mul"(%[[SI]], %[[TG]])
  // CHECK:       %[[CELL:.*]] = "onnx.Add"(%[[KEEP]], %[[NEW]])
  // CHECK:       %[[SO:.*]] = "onnx.Sigmoid"(%[[O]])
  // CHECK:       %[[TC:.*]] = "onnx.Tanh"(%[[CELL]])
  // CHECK:       %[[H:.*]] = "onnx.Mul"(%[[SO]], %[[TC]])
  // CHECK:       %[[YH:.*]] = "onnx.Reshape"(%[[H]], %{{.*}}) {{.*}} -> tensor<1x1x2xf32>
  // CHECK:       func.return %[[YH]]
  func.func @lstm_no_y(%x: tensor<1x1x3xf32>) -> tensor<1x1x2xf32> {
    %w = onnx.weight @lw : tensor<1x8x3xf32>
    %r = onnx.weight @lr : tensor<1x8x2xf32>
    %y, %yh = "onnx.LSTM"(%x, %w, %r) {hidden_size = 2 : i64, onnx_node_name = "lstm"} : (tensor<1x1x3xf32>, tensor<1x8x3xf32>, tensor<1x8x2xf32>) -> (none, tensor<1x1x2xf32>)
    func.return %yh : tensor<1x1x2xf32>
  }

  // Nothing recurrent: nothing changes.
  // CHECK-LABEL: func.func @preserve_other_ops
  // CHECK-NEXT:  "onnx.Tanh"
  // CHECK-NEXT:  func.return
  func.func @preserve_other_ops(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %t = "onnx.Tanh"(%x) {onnx_node_name = "tanh"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %t : tensor<2x3xf32>
  }
}
