// RUN: python %S/../npz.py %t.weights.npz "a=np.ones((8, 32, 1, 1), np.float32)" "b=np.ones((8, 8, 3, 3), np.float32)" "c=np.ones((32, 8, 1, 1), np.float32)" "e=np.ones((16, 8, 1, 1), np.float32)" "f=np.ones((16, 8, 3, 3), np.float32)" "d=np.ones((32, 1, 3, 3), np.float32)" "g=np.ones((32, 16, 3, 3), np.float32)"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p pointwise-convs-nhwc | filecheck %s

// Four bottleneck blocks: the 1x1 convs read and write NHWC, except the reduce conv, which writes
// the NCHW its 3x3 conv reads; the 3x3 conv writes the NHWC its expand conv reads; the residual
// Adds and Relus run in NHWC. One Transpose is left at the start; the GlobalAveragePool at the
// end becomes a ReduceMean of the NHWC map, its [1, 1, 1, C] result transposed.

builtin.module {
  // CHECK-LABEL: func.func @bottlenecks
  // CHECK:       %[[IN:.*]] = "onnx.Transpose"(%{{.*}}) {perm = array<i64: 0, 2, 3, 1>, onnx_node_name = "reduce1.to_nhwc"}
  // CHECK:       "onnx.Conv"(%[[IN]], {{.*}}) {onnx_node_name = "reduce1", dlc.layout = "NHWC", dlc.out_layout = "NCHW"} : (tensor<1x6x6x32xf32>, tensor<8x32x1x1xf32>) -> tensor<1x8x6x6xf32>
  // CHECK:       "onnx.Relu"({{.*}}) : (tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
  // CHECK:       "onnx.Conv"({{.*}}) {pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "spatial1", dlc.out_layout = "NHWC"} : (tensor<1x8x6x6xf32>, tensor<8x8x3x3xf32>) -> tensor<1x6x6x8xf32>
  // CHECK:       "onnx.Relu"({{.*}}) : (tensor<1x6x6x8xf32>) -> tensor<1x6x6x8xf32>
  // CHECK:       "onnx.Conv"({{.*}}) {onnx_node_name = "expand1", dlc.layout = "NHWC"} : (tensor<1x6x6x8xf32>, tensor<32x8x1x1xf32>) -> tensor<1x6x6x32xf32>
  // CHECK:       "onnx.Add"(%{{.*}}, %[[IN]]){{.*}}: (tensor<1x6x6x32xf32>, tensor<1x6x6x32xf32>) -> tensor<1x6x6x32xf32>
  // CHECK:       "onnx.Relu"({{.*}}) : (tensor<1x6x6x32xf32>) -> tensor<1x6x6x32xf32>
  // CHECK:       "onnx.Conv"({{.*}}) {onnx_node_name = "reduce2", dlc.layout = "NHWC", dlc.out_layout = "NCHW"}
  // CHECK:       "onnx.Conv"({{.*}}) {pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "spatial2", dlc.out_layout = "NHWC"}
  // CHECK:       "onnx.Conv"({{.*}}) {onnx_node_name = "expand2", dlc.layout = "NHWC"}
  // CHECK:       "onnx.Conv"({{.*}}) {onnx_node_name = "expand3", dlc.layout = "NHWC"}
  // CHECK:       "onnx.Conv"({{.*}}) {onnx_node_name = "expand4", dlc.layout = "NHWC"}
  // CHECK:       %[[OUT:.*]] = "onnx.Relu"({{.*}}) : (tensor<1x6x6x32xf32>) -> tensor<1x6x6x32xf32>
  // CHECK:       %[[MEAN:.*]] = "onnx.ReduceMean"(%[[OUT]], %{{.*}}) {{.*}} -> tensor<1x1x1x32xf32>
  // CHECK-NEXT:  %[[Y:.*]] = "onnx.Transpose"(%[[MEAN]]) {perm = array<i64: 0, 3, 1, 2>{{.*}} -> tensor<1x32x1x1xf32>
  // CHECK-NOT:   "onnx.Transpose"
  // CHECK:       func.return %[[Y]]
  func.func @bottlenecks(%x: tensor<1x32x6x6xf32>) -> tensor<1x32x1x1xf32> {
    %a = onnx.weight @a : tensor<8x32x1x1xf32>
    %b = onnx.weight @b : tensor<8x8x3x3xf32>
    %c = onnx.weight @c : tensor<32x8x1x1xf32>
    %0 = "onnx.Conv"(%x, %a) {onnx_node_name = "reduce1"} : (tensor<1x32x6x6xf32>, tensor<8x32x1x1xf32>) -> tensor<1x8x6x6xf32>
    %1 = "onnx.Relu"(%0) : (tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %2 = "onnx.Conv"(%1, %b) {pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "spatial1"} : (tensor<1x8x6x6xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x6x6xf32>
    %3 = "onnx.Relu"(%2) : (tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %4 = "onnx.Conv"(%3, %c) {onnx_node_name = "expand1"} : (tensor<1x8x6x6xf32>, tensor<32x8x1x1xf32>) -> tensor<1x32x6x6xf32>
    %5 = "onnx.Add"(%4, %x) : (tensor<1x32x6x6xf32>, tensor<1x32x6x6xf32>) -> tensor<1x32x6x6xf32>
    %6 = "onnx.Relu"(%5) : (tensor<1x32x6x6xf32>) -> tensor<1x32x6x6xf32>
    %7 = "onnx.Conv"(%6, %a) {onnx_node_name = "reduce2"} : (tensor<1x32x6x6xf32>, tensor<8x32x1x1xf32>) -> tensor<1x8x6x6xf32>
    %8 = "onnx.Relu"(%7) : (tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %9 = "onnx.Conv"(%8, %b) {pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "spatial2"} : (tensor<1x8x6x6xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x6x6xf32>
    %10 = "onnx.Relu"(%9) : (tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %11 = "onnx.Conv"(%10, %c) {onnx_node_name = "expand2"} : (tensor<1x8x6x6xf32>, tensor<32x8x1x1xf32>) -> tensor<1x32x6x6xf32>
    %12 = "onnx.Add"(%11, %6) : (tensor<1x32x6x6xf32>, tensor<1x32x6x6xf32>) -> tensor<1x32x6x6xf32>
    %13 = "onnx.Relu"(%12) : (tensor<1x32x6x6xf32>) -> tensor<1x32x6x6xf32>
    %14 = "onnx.Conv"(%13, %a) {onnx_node_name = "reduce3"} : (tensor<1x32x6x6xf32>, tensor<8x32x1x1xf32>) -> tensor<1x8x6x6xf32>
    %15 = "onnx.Relu"(%14) : (tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %16 = "onnx.Conv"(%15, %b) {pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "spatial3"} : (tensor<1x8x6x6xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x6x6xf32>
    %17 = "onnx.Relu"(%16) : (tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %18 = "onnx.Conv"(%17, %c) {onnx_node_name = "expand3"} : (tensor<1x8x6x6xf32>, tensor<32x8x1x1xf32>) -> tensor<1x32x6x6xf32>
    %19 = "onnx.Add"(%18, %13) : (tensor<1x32x6x6xf32>, tensor<1x32x6x6xf32>) -> tensor<1x32x6x6xf32>
    %20 = "onnx.Relu"(%19) : (tensor<1x32x6x6xf32>) -> tensor<1x32x6x6xf32>
    %21 = "onnx.Conv"(%20, %a) {onnx_node_name = "reduce4"} : (tensor<1x32x6x6xf32>, tensor<8x32x1x1xf32>) -> tensor<1x8x6x6xf32>
    %22 = "onnx.Relu"(%21) : (tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %23 = "onnx.Conv"(%22, %b) {pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "spatial4"} : (tensor<1x8x6x6xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x6x6xf32>
    %24 = "onnx.Relu"(%23) : (tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %25 = "onnx.Conv"(%24, %c) {onnx_node_name = "expand4"} : (tensor<1x8x6x6xf32>, tensor<32x8x1x1xf32>) -> tensor<1x32x6x6xf32>
    %26 = "onnx.Add"(%25, %20) : (tensor<1x32x6x6xf32>, tensor<1x32x6x6xf32>) -> tensor<1x32x6x6xf32>
    %27 = "onnx.Relu"(%26) : (tensor<1x32x6x6xf32>) -> tensor<1x32x6x6xf32>
    %g = "onnx.GlobalAveragePool"(%27) {onnx_node_name = "pool"} : (tensor<1x32x6x6xf32>) -> tensor<1x32x1x1xf32>
    func.return %g : tensor<1x32x1x1xf32>
  }

  // A fire module: the Concat of a 1x1 and a 3x3 conv reads NCHW, and the squeeze conv's result
  // is read in both layouts. The Transposes it would leave outweigh the 1x1 convs: unchanged.
  // CHECK-LABEL: func.func @fire
  // CHECK-NOT:   dlc.layout
  // CHECK-NOT:   "onnx.Transpose"
  // CHECK:       func.return
  func.func @fire(%x: tensor<1x32x6x6xf32>) -> tensor<1x32x6x6xf32> {
    %a = onnx.weight @a : tensor<8x32x1x1xf32>
    %e = onnx.weight @e : tensor<16x8x1x1xf32>
    %f = onnx.weight @f : tensor<16x8x3x3xf32>
    %0 = "onnx.Conv"(%x, %a) {onnx_node_name = "squeeze"} : (tensor<1x32x6x6xf32>, tensor<8x32x1x1xf32>) -> tensor<1x8x6x6xf32>
    %1 = "onnx.Relu"(%0) : (tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %2 = "onnx.Conv"(%1, %e) {onnx_node_name = "expand1x1"} : (tensor<1x8x6x6xf32>, tensor<16x8x1x1xf32>) -> tensor<1x16x6x6xf32>
    %3 = "onnx.Conv"(%1, %f) {pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "expand3x3"} : (tensor<1x8x6x6xf32>, tensor<16x8x3x3xf32>) -> tensor<1x16x6x6xf32>
    %4 = "onnx.Concat"(%2, %3) {axis = 1 : i64} : (tensor<1x16x6x6xf32>, tensor<1x16x6x6xf32>) -> tensor<1x32x6x6xf32>
    func.return %4 : tensor<1x32x6x6xf32>
  }

  // A mobile block (expand, depthwise, project, residual Add) runs its convs in NHWC: the
  // depthwise conv's channels fill the vector lanes, its weight stays as ONNX has it, and the
  // Relus between the convs run in NHWC. Only the block's input is transposed: the project conv
  // writes the NCHW its Add and the function's result want.
  // CHECK-LABEL: func.func @mobile_block
  // CHECK:       %[[IN:.*]] = "onnx.Transpose"(%{{.*}}) {perm = array<i64: 0, 2, 3, 1>, onnx_node_name = "expand.to_nhwc"}
  // CHECK:       "onnx.Conv"(%[[IN]], {{.*}}) {onnx_node_name = "expand", dlc.layout = "NHWC"} : (tensor<1x6x6x8xf32>, tensor<32x8x1x1xf32>) -> tensor<1x6x6x32xf32>
  // CHECK:       "onnx.Relu"({{.*}}) : (tensor<1x6x6x32xf32>) -> tensor<1x6x6x32xf32>
  // CHECK:       "onnx.Conv"({{.*}}) {pads = array<i64: 1, 1, 1, 1>, group = 32 : i64, onnx_node_name = "depthwise", dlc.layout = "NHWC"} : (tensor<1x6x6x32xf32>, tensor<32x1x3x3xf32>) -> tensor<1x6x6x32xf32>
  // CHECK:       "onnx.Relu"({{.*}}) : (tensor<1x6x6x32xf32>) -> tensor<1x6x6x32xf32>
  // CHECK:       "onnx.Conv"({{.*}}) {onnx_node_name = "project", dlc.layout = "NHWC", dlc.out_layout = "NCHW"} : (tensor<1x6x6x32xf32>, tensor<8x32x1x1xf32>) -> tensor<1x8x6x6xf32>
  // CHECK-NOT:   "onnx.Transpose"
  // CHECK:       "onnx.Add"({{.*}}) : (tensor<1x8x6x6xf32>, tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
  // CHECK:       func.return
  func.func @mobile_block(%x: tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32> {
    %c = onnx.weight @c : tensor<32x8x1x1xf32>
    %d = onnx.weight @d : tensor<32x1x3x3xf32>
    %a = onnx.weight @a : tensor<8x32x1x1xf32>
    %0 = "onnx.Conv"(%x, %c) {onnx_node_name = "expand"} : (tensor<1x8x6x6xf32>, tensor<32x8x1x1xf32>) -> tensor<1x32x6x6xf32>
    %1 = "onnx.Relu"(%0) : (tensor<1x32x6x6xf32>) -> tensor<1x32x6x6xf32>
    %2 = "onnx.Conv"(%1, %d) {pads = array<i64: 1, 1, 1, 1>, group = 32 : i64, onnx_node_name = "depthwise"} : (tensor<1x32x6x6xf32>, tensor<32x1x3x3xf32>) -> tensor<1x32x6x6xf32>
    %3 = "onnx.Relu"(%2) : (tensor<1x32x6x6xf32>) -> tensor<1x32x6x6xf32>
    %4 = "onnx.Conv"(%3, %a) {onnx_node_name = "project"} : (tensor<1x32x6x6xf32>, tensor<8x32x1x1xf32>) -> tensor<1x8x6x6xf32>
    %5 = "onnx.Add"(%4, %x) : (tensor<1x8x6x6xf32>, tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    func.return %5 : tensor<1x8x6x6xf32>
  }

  // A squeeze-and-excitation block: the pool of the depthwise conv's map becomes a ReduceMean
  // of the NHWC map, and the Mul by its gate runs in NHWC (the gate, [1, 1, 1, 32], needs no
  // Transpose: its convs are NHWC too).
  // CHECK-LABEL: func.func @excite_block
  // CHECK:       "onnx.Conv"({{.*}}) {pads = array<i64: 1, 1, 1, 1>, group = 32 : i64, onnx_node_name = "depthwise", dlc.layout = "NHWC"}
  // CHECK:       %[[MAP:.*]] = "onnx.Relu"({{.*}}) : (tensor<1x6x6x32xf32>) -> tensor<1x6x6x32xf32>
  // CHECK:       "onnx.ReduceMean"(%[[MAP]], %{{.*}}) {{.*}} -> tensor<1x1x1x32xf32>
  // CHECK-NOT:   "onnx.Transpose"
  // CHECK:       %[[GATE:.*]] = "onnx.Sigmoid"({{.*}}) : (tensor<1x1x1x32xf32>) -> tensor<1x1x1x32xf32>
  // CHECK:       "onnx.Mul"(%[[MAP]], %[[GATE]]){{.*}} : (tensor<1x6x6x32xf32>, tensor<1x1x1x32xf32>) -> tensor<1x6x6x32xf32>
  // CHECK:       "onnx.Conv"({{.*}}) {onnx_node_name = "project", dlc.layout = "NHWC", dlc.out_layout = "NCHW"}
  // CHECK-NOT:   "onnx.Transpose"
  // CHECK:       func.return
  func.func @excite_block(%x: tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32> {
    %c = onnx.weight @c : tensor<32x8x1x1xf32>
    %d = onnx.weight @d : tensor<32x1x3x3xf32>
    %a = onnx.weight @a : tensor<8x32x1x1xf32>
    %0 = "onnx.Conv"(%x, %c) {onnx_node_name = "expand"} : (tensor<1x8x6x6xf32>, tensor<32x8x1x1xf32>) -> tensor<1x32x6x6xf32>
    %1 = "onnx.Relu"(%0) : (tensor<1x32x6x6xf32>) -> tensor<1x32x6x6xf32>
    %2 = "onnx.Conv"(%1, %d) {pads = array<i64: 1, 1, 1, 1>, group = 32 : i64, onnx_node_name = "depthwise"} : (tensor<1x32x6x6xf32>, tensor<32x1x3x3xf32>) -> tensor<1x32x6x6xf32>
    %3 = "onnx.Relu"(%2) : (tensor<1x32x6x6xf32>) -> tensor<1x32x6x6xf32>
    %4 = "onnx.GlobalAveragePool"(%3) {onnx_node_name = "squeeze"} : (tensor<1x32x6x6xf32>) -> tensor<1x32x1x1xf32>
    %5 = "onnx.Conv"(%4, %a) {onnx_node_name = "reduce"} : (tensor<1x32x1x1xf32>, tensor<8x32x1x1xf32>) -> tensor<1x8x1x1xf32>
    %6 = "onnx.Relu"(%5) : (tensor<1x8x1x1xf32>) -> tensor<1x8x1x1xf32>
    %7 = "onnx.Conv"(%6, %c) {onnx_node_name = "restore"} : (tensor<1x8x1x1xf32>, tensor<32x8x1x1xf32>) -> tensor<1x32x1x1xf32>
    %8 = "onnx.Sigmoid"(%7) : (tensor<1x32x1x1xf32>) -> tensor<1x32x1x1xf32>
    %9 = "onnx.Mul"(%3, %8) : (tensor<1x32x6x6xf32>, tensor<1x32x1x1xf32>) -> tensor<1x32x6x6xf32>
    %10 = "onnx.Conv"(%9, %a) {onnx_node_name = "project"} : (tensor<1x32x6x6xf32>, tensor<8x32x1x1xf32>) -> tensor<1x8x6x6xf32>
    func.return %10 : tensor<1x8x6x6xf32>
  }

  // A stem conv with a SiLU (x * Sigmoid(x)) before the first 1x1 conv: the Transpose to NHWC is
  // absorbed through the SiLU into the stem's store, as through a Relu.
  // CHECK-LABEL: func.func @silu_stem
  // CHECK-NOT:   "onnx.Transpose"
  // CHECK:       %[[STEM:.*]] = "onnx.Conv"({{.*}}) {pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "stem", dlc.out_layout = "NHWC"} : (tensor<1x8x6x6xf32>, tensor<8x8x3x3xf32>) -> tensor<1x6x6x8xf32>
  // CHECK:       %[[GATE:.*]] = "onnx.Sigmoid"(%[[STEM]]) : (tensor<1x6x6x8xf32>) -> tensor<1x6x6x8xf32>
  // CHECK:       %[[SILU:.*]] = "onnx.Mul"(%[[STEM]], %[[GATE]]) : (tensor<1x6x6x8xf32>, tensor<1x6x6x8xf32>) -> tensor<1x6x6x8xf32>
  // CHECK:       "onnx.Conv"(%[[SILU]], {{.*}}) {onnx_node_name = "expand", dlc.layout = "NHWC"}
  // CHECK-NOT:   "onnx.Transpose"
  // CHECK:       func.return
  func.func @silu_stem(%x: tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32> {
    %b = onnx.weight @b : tensor<8x8x3x3xf32>
    %c = onnx.weight @c : tensor<32x8x1x1xf32>
    %a = onnx.weight @a : tensor<8x32x1x1xf32>
    %0 = "onnx.Conv"(%x, %b) {pads = array<i64: 1, 1, 1, 1>, onnx_node_name = "stem"} : (tensor<1x8x6x6xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x6x6xf32>
    %1 = "onnx.Sigmoid"(%0) : (tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %2 = "onnx.Mul"(%0, %1) : (tensor<1x8x6x6xf32>, tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xf32>
    %3 = "onnx.Conv"(%2, %c) {onnx_node_name = "expand"} : (tensor<1x8x6x6xf32>, tensor<32x8x1x1xf32>) -> tensor<1x32x6x6xf32>
    %4 = "onnx.Relu"(%3) : (tensor<1x32x6x6xf32>) -> tensor<1x32x6x6xf32>
    %5 = "onnx.Conv"(%4, %a) {onnx_node_name = "project"} : (tensor<1x32x6x6xf32>, tensor<8x32x1x1xf32>) -> tensor<1x8x6x6xf32>
    func.return %5 : tensor<1x8x6x6xf32>
  }

  // A grouped conv that is not depthwise (two groups of 16 channels) keeps every conv of its
  // function in NCHW: the NHWC lowering takes 1x1 and depthwise convs only.
  // CHECK-LABEL: func.func @with_groups
  // CHECK-NOT:   dlc.layout
  // CHECK:       func.return
  func.func @with_groups(%x: tensor<1x32x6x6xf32>) -> tensor<1x32x6x6xf32> {
    %g = onnx.weight @g : tensor<32x16x3x3xf32>
    %a = onnx.weight @a : tensor<8x32x1x1xf32>
    %c = onnx.weight @c : tensor<32x8x1x1xf32>
    %0 = "onnx.Conv"(%x, %g) {pads = array<i64: 1, 1, 1, 1>, group = 2 : i64} : (tensor<1x32x6x6xf32>, tensor<32x16x3x3xf32>) -> tensor<1x32x6x6xf32>
    %1 = "onnx.Conv"(%0, %a) : (tensor<1x32x6x6xf32>, tensor<8x32x1x1xf32>) -> tensor<1x8x6x6xf32>
    %2 = "onnx.Conv"(%1, %c) : (tensor<1x8x6x6xf32>, tensor<32x8x1x1xf32>) -> tensor<1x32x6x6xf32>
    func.return %2 : tensor<1x32x6x6xf32>
  }
}
