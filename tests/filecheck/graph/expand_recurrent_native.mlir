// RUN: python %S/../npz.py %t.weights.npz "w=np.ones((1, 2, 3), np.float32)" "r=np.ones((1, 2, 2), np.float32)"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p expand-recurrent | filecheck %s

// More than UNROLL_MAX_STEPS steps: one time step becomes a body module (dialects/loop.py)
// run by an onnx.Loop whose scan input is the step's slice of the one input projection and
// whose scan output is Y; R^T is a constant of the body, so its GEMM packs it.

builtin.module {
  // CHECK:       builtin.module @rnn_0 {
  // CHECK-NEXT:    func.func @main(%[[I:.*]]: tensor<i64>, %[[C:.*]]: tensor<i1>, %[[H:.*]]: tensor<1x2xf32>, %[[X:.*]]: tensor<1x2xf32>)
  // CHECK:           %[[RT:.*]] = onnx.weight @rnn.step : tensor<2x2xf32>
  // CHECK:           %[[M:.*]] = "onnx.MatMul"(%[[H]], %[[RT]])
  // CHECK:           %[[A:.*]] = "onnx.Add"(%[[X]], %[[M]])
  // CHECK:           %[[T:.*]] = "onnx.Tanh"(%[[A]])
  // CHECK:           func.return %[[C]], %[[T]], %[[T]]
  // CHECK-LABEL: func.func @rnn
  // CHECK-NOT:   onnx.RNN
  // CHECK:       %[[P:.*]] = "onnx.MatMul"
  // CHECK:       %[[P3:.*]] = "onnx.Reshape"(%[[P]], %{{.*}}) {{.*}} -> tensor<9x1x2xf32>
  // CHECK:       %{{.*}}, %[[Y:.*]] = "onnx.Loop"(%{{.*}}, %{{.*}}, %{{.*}}, %[[P3]]) {{.*}}body = @rnn_0{{.*}}dlc.num_scan_inputs = 1
  // CHECK:       "onnx.Reshape"(%[[Y]], %{{.*}}) {{.*}} -> tensor<9x1x1x2xf32>
  func.func @rnn(%x: tensor<9x1x3xf32>) -> tensor<9x1x1x2xf32> {
    %w = onnx.weight @w : tensor<1x2x3xf32>
    %r = onnx.weight @r : tensor<1x2x2xf32>
    %y, %yh = "onnx.RNN"(%x, %w, %r) {hidden_size = 2 : i64, onnx_node_name = "rnn"} : (tensor<9x1x3xf32>, tensor<1x2x3xf32>, tensor<1x2x2xf32>) -> (tensor<9x1x1x2xf32>, tensor<1x1x2xf32>)
    func.return %y : tensor<9x1x1x2xf32>
  }
}
