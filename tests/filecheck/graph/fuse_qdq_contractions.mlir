// RUN: python %S/../npz.py %t.weights.npz "w=np.ones((4, 3, 1, 1), np.int8)" "ws=np.full(4, 0.5, np.float32)" "wz=np.zeros(4, np.int8)" "xs=np.float32(0.25)" "xz=np.uint8(128)" "ys=np.float32(2.0)" "yz=np.uint8(3)" "b=np.arange(4, dtype=np.int32)" "bs=np.full(4, 0.125, np.float32)" "bz=np.zeros(4, np.int32)" "bad=np.full(4, 0.5, np.float32)" "m=np.ones((3, 5), np.int8)" "ms=np.float32(0.5)" "mz=np.int8(0)"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p fuse-qdq-contractions | filecheck %s

// DequantizeLinear -> Conv/MatMul -> QuantizeLinear becomes one integer op that reads the
// quantized tensors themselves; a pattern left in float says why on the contraction.

builtin.module {
  // A Conv with a per-channel weight and an int32 bias of scale x_scale * w_scale.
  // CHECK-LABEL: func.func @conv
  // CHECK-SAME:  (%[[X:.*]]: tensor<1x3x4x4xui8>)
  // CHECK:       %[[Y:.*]] = "onnx.QLinearConv"(%[[X]], %{{.*}}, %{{.*}}, %[[W:.*]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[B:.*]]) {pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "conv", dlc.quantized = "integer kernel: DequantizeLinear -> Conv -> QuantizeLinear"}
  // CHECK-SAME:  -> tensor<1x4x4x4xui8>
  // CHECK-NEXT:  func.return %[[Y]]
  func.func @conv(%xq: tensor<1x3x4x4xui8>) -> tensor<1x4x4x4xui8> {
    %xs = onnx.weight @xs : tensor<f32>
    %xz = onnx.weight @xz : tensor<ui8>
    %x = "onnx.DequantizeLinear"(%xq, %xs, %xz) {onnx_node_name = "dqx"} : (tensor<1x3x4x4xui8>, tensor<f32>, tensor<ui8>) -> tensor<1x3x4x4xf32>
    %wq = onnx.weight @w : tensor<4x3x1x1xi8>
    %ws = onnx.weight @ws : tensor<4xf32>
    %wz = onnx.weight @wz : tensor<4xi8>
    %w = "onnx.DequantizeLinear"(%wq, %ws, %wz) {axis = 0 : i64, onnx_node_name = "dqw"} : (tensor<4x3x1x1xi8>, tensor<4xf32>, tensor<4xi8>) -> tensor<4x3x1x1xf32>
    %bq = onnx.weight @b : tensor<4xi32>
    %bs = onnx.weight @bs : tensor<4xf32>
    %bz = onnx.weight @bz : tensor<4xi32>
    %b = "onnx.DequantizeLinear"(%bq, %bs, %bz) {axis = 0 : i64, onnx_node_name = "dqb"} : (tensor<4xi32>, tensor<4xf32>, tensor<4xi32>) -> tensor<4xf32>
    %c = "onnx.Conv"(%x, %w, %b) {pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "conv"} : (tensor<1x3x4x4xf32>, tensor<4x3x1x1xf32>, tensor<4xf32>) -> tensor<1x4x4x4xf32>
    %ys = onnx.weight @ys : tensor<f32>
    %yz = onnx.weight @yz : tensor<ui8>
    %y = "onnx.QuantizeLinear"(%c, %ys, %yz) {onnx_node_name = "q"} : (tensor<1x4x4x4xf32>, tensor<f32>, tensor<ui8>) -> tensor<1x4x4x4xui8>
    func.return %y : tensor<1x4x4x4xui8>
  }

  // A MatMul of a quantized activation by a quantized constant matrix.
  // CHECK-LABEL: func.func @matmul
  // CHECK:       "onnx.QLinearMatMul"
  // CHECK-SAME:  dlc.quantized = "integer kernel: DequantizeLinear -> MatMul -> QuantizeLinear"
  // CHECK-NOT:   "onnx.MatMul"
  func.func @matmul(%xq: tensor<2x3xui8>) -> tensor<2x5xui8> {
    %xs = onnx.weight @xs : tensor<f32>
    %xz = onnx.weight @xz : tensor<ui8>
    %x = "onnx.DequantizeLinear"(%xq, %xs, %xz) {onnx_node_name = "dqx"} : (tensor<2x3xui8>, tensor<f32>, tensor<ui8>) -> tensor<2x3xf32>
    %mq = onnx.weight @m : tensor<3x5xi8>
    %ms = onnx.weight @ms : tensor<f32>
    %mz = onnx.weight @mz : tensor<i8>
    %m = "onnx.DequantizeLinear"(%mq, %ms, %mz) {onnx_node_name = "dqm"} : (tensor<3x5xi8>, tensor<f32>, tensor<i8>) -> tensor<3x5xf32>
    %p = "onnx.MatMul"(%x, %m) {onnx_node_name = "mm"} : (tensor<2x3xf32>, tensor<3x5xf32>) -> tensor<2x5xf32>
    %ys = onnx.weight @ys : tensor<f32>
    %yz = onnx.weight @yz : tensor<ui8>
    %y = "onnx.QuantizeLinear"(%p, %ys, %yz) {onnx_node_name = "q"} : (tensor<2x5xf32>, tensor<f32>, tensor<ui8>) -> tensor<2x5xui8>
    func.return %y : tensor<2x5xui8>
  }

  // The bias's scale is not x_scale * w_scale: an int32 bias would change the result.
  // CHECK-LABEL: func.func @preserve_bias_scale
  // CHECK:       "onnx.Conv"
  // CHECK-SAME:  dlc.quantized = "left in float: the bias is not an int32 constant dequantized with scale x_scale * w_scale"
  // CHECK:       "onnx.QuantizeLinear"
  func.func @preserve_bias_scale(%xq: tensor<1x3x4x4xui8>) -> tensor<1x4x4x4xui8> {
    %xs = onnx.weight @xs : tensor<f32>
    %xz = onnx.weight @xz : tensor<ui8>
    %x = "onnx.DequantizeLinear"(%xq, %xs, %xz) {onnx_node_name = "dqx"} : (tensor<1x3x4x4xui8>, tensor<f32>, tensor<ui8>) -> tensor<1x3x4x4xf32>
    %wq = onnx.weight @w : tensor<4x3x1x1xi8>
    %ws = onnx.weight @ws : tensor<4xf32>
    %wz = onnx.weight @wz : tensor<4xi8>
    %w = "onnx.DequantizeLinear"(%wq, %ws, %wz) {axis = 0 : i64, onnx_node_name = "dqw"} : (tensor<4x3x1x1xi8>, tensor<4xf32>, tensor<4xi8>) -> tensor<4x3x1x1xf32>
    %bq = onnx.weight @b : tensor<4xi32>
    %bs = onnx.weight @bad : tensor<4xf32>
    %b = "onnx.DequantizeLinear"(%bq, %bs) {axis = 0 : i64, onnx_node_name = "dqb"} : (tensor<4xi32>, tensor<4xf32>) -> tensor<4xf32>
    %c = "onnx.Conv"(%x, %w, %b) {onnx_node_name = "conv"} : (tensor<1x3x4x4xf32>, tensor<4x3x1x1xf32>, tensor<4xf32>) -> tensor<1x4x4x4xf32>
    %ys = onnx.weight @ys : tensor<f32>
    %yz = onnx.weight @yz : tensor<ui8>
    %y = "onnx.QuantizeLinear"(%c, %ys, %yz) {onnx_node_name = "q"} : (tensor<1x4x4x4xf32>, tensor<f32>, tensor<ui8>) -> tensor<1x4x4x4xui8>
    func.return %y : tensor<1x4x4x4xui8>
  }

  // A float input (no DequantizeLinear before the MatMul) stays in float.
  // CHECK-LABEL: func.func @preserve_float_input
  // CHECK:       "onnx.MatMul"
  // CHECK-SAME:  dlc.quantized = "left in float: the data input is not the output of a DequantizeLinear"
  func.func @preserve_float_input(%x: tensor<2x3xf32>) -> tensor<2x5xui8> {
    %mq = onnx.weight @m : tensor<3x5xi8>
    %ms = onnx.weight @ms : tensor<f32>
    %mz = onnx.weight @mz : tensor<i8>
    %m = "onnx.DequantizeLinear"(%mq, %ms, %mz) {onnx_node_name = "dqm"} : (tensor<3x5xi8>, tensor<f32>, tensor<i8>) -> tensor<3x5xf32>
    %p = "onnx.MatMul"(%x, %m) {onnx_node_name = "mm"} : (tensor<2x3xf32>, tensor<3x5xf32>) -> tensor<2x5xf32>
    %ys = onnx.weight @ys : tensor<f32>
    %yz = onnx.weight @yz : tensor<ui8>
    %y = "onnx.QuantizeLinear"(%p, %ys, %yz) {onnx_node_name = "q"} : (tensor<2x5xf32>, tensor<f32>, tensor<ui8>) -> tensor<2x5xui8>
    func.return %y : tensor<2x5xui8>
  }
}
