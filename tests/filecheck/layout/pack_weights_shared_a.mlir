// RUN: python %S/../npz.py %t.weights.npz "u=np.ones((2, 112), np.float32)" "v=np.ones((2, 128), np.float32)" "w=np.ones((2, 96), np.float32)" "x=np.ones((4, 112), np.float32)"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p pack-weights | filecheck %s

// Constant A's of GEMMs of one shape (m x n) whose row lengths lie within 1.25x of each
// other are stored at one row stride, the longest's (rows zero-padded), so that the GEMMs
// share their micro-kernel tiles (one per A row stride): k = 112 is stored at 128's stride.
// k = 96 is more than 1.25x shorter than 128 and keeps its own; the A of another shape
// (@preserve_other_shape, m = 4) is left alone.

builtin.module attributes {dlc.vector_bits = 512 : i64} {
  "memref.global"() <{sym_name = "u", type = memref<2x112xf32>, initial_value, sym_visibility = "private", constant}> : () -> ()
  "memref.global"() <{sym_name = "v", type = memref<2x128xf32>, initial_value, sym_visibility = "private", constant}> : () -> ()
  "memref.global"() <{sym_name = "w", type = memref<2x96xf32>, initial_value, sym_visibility = "private", constant}> : () -> ()
  "memref.global"() <{sym_name = "x", type = memref<4x112xf32>, initial_value, sym_visibility = "private", constant}> : () -> ()

  // CHECK-LABEL: func.func private @dlc_gemm_0
  // CHECK-SAME:  (memref<2x128xf32>, memref<112x8xf32>, memref<2x8xf32>)
  // CHECK-SAME:  a_row_stride = 128 : i64
  func.func private @dlc_gemm_0(memref<2x112xf32>, memref<112x8xf32>, memref<2x8xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 2 : i64, n = 8 : i64, k = 112 : i64, a_row_stride = 112 : i64, a_k_stride = 1 : i64, ldb = 8 : i64, ldc = 8 : i64, residual = 0 : i64, b_layout = "window"}}

  // CHECK-LABEL: func.func private @dlc_gemm_1
  // CHECK-SAME:  (memref<2x128xf32>, memref<128x8xf32>, memref<2x8xf32>)
  // CHECK-SAME:  a_row_stride = 128 : i64
  func.func private @dlc_gemm_1(memref<2x128xf32>, memref<128x8xf32>, memref<2x8xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 2 : i64, n = 8 : i64, k = 128 : i64, a_row_stride = 128 : i64, a_k_stride = 1 : i64, ldb = 8 : i64, ldc = 8 : i64, residual = 0 : i64, b_layout = "window"}}

  // CHECK-LABEL: func.func private @dlc_gemm_2
  // CHECK-SAME:  (memref<2x96xf32>, memref<96x8xf32>, memref<2x8xf32>)
  // CHECK-SAME:  a_row_stride = 96 : i64
  func.func private @dlc_gemm_2(memref<2x96xf32>, memref<96x8xf32>, memref<2x8xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 2 : i64, n = 8 : i64, k = 96 : i64, a_row_stride = 96 : i64, a_k_stride = 1 : i64, ldb = 8 : i64, ldc = 8 : i64, residual = 0 : i64, b_layout = "window"}}

  // CHECK-LABEL: func.func private @dlc_gemm_3
  // CHECK-SAME:  (memref<4x112xf32>, memref<112x8xf32>, memref<4x8xf32>)
  // CHECK-SAME:  a_row_stride = 112 : i64
  func.func private @dlc_gemm_3(memref<4x112xf32>, memref<112x8xf32>, memref<4x8xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 4 : i64, n = 8 : i64, k = 112 : i64, a_row_stride = 112 : i64, a_k_stride = 1 : i64, ldb = 8 : i64, ldc = 8 : i64, residual = 0 : i64, b_layout = "window"}}

  // CHECK-LABEL: func.func private @shorter_rows
  // CHECK-SAME:  (%[[A:.*]]: memref<2x128xf32>, %{{.*}}: memref<112x8xf32>, %{{.*}}: memref<2x8xf32>)
  // CHECK-NEXT:  func.call @dlc_gemm_0(%[[A]],
  func.func private @shorter_rows(%a: memref<2x112xf32>, %b: memref<112x8xf32>, %c: memref<2x8xf32>) {
    func.call @dlc_gemm_0(%a, %b, %c) : (memref<2x112xf32>, memref<112x8xf32>, memref<2x8xf32>) -> ()
    func.return
  }

  // CHECK-LABEL: func.func private @longest_rows
  // CHECK-SAME:  (%[[A:.*]]: memref<2x128xf32>,
  // CHECK-NEXT:  func.call @dlc_gemm_1(%[[A]],
  func.func private @longest_rows(%a: memref<2x128xf32>, %b: memref<128x8xf32>, %c: memref<2x8xf32>) {
    func.call @dlc_gemm_1(%a, %b, %c) : (memref<2x128xf32>, memref<128x8xf32>, memref<2x8xf32>) -> ()
    func.return
  }

  // CHECK-LABEL: func.func private @preserve_far_shorter_rows
  // CHECK-SAME:  (%[[A:.*]]: memref<2x96xf32>,
  // CHECK-NEXT:  func.call @dlc_gemm_2(%[[A]],
  func.func private @preserve_far_shorter_rows(%a: memref<2x96xf32>, %b: memref<96x8xf32>, %c: memref<2x8xf32>) {
    func.call @dlc_gemm_2(%a, %b, %c) : (memref<2x96xf32>, memref<96x8xf32>, memref<2x8xf32>) -> ()
    func.return
  }

  // CHECK-LABEL: func.func private @preserve_other_shape
  // CHECK-SAME:  (%[[A:.*]]: memref<4x112xf32>,
  // CHECK-NEXT:  func.call @dlc_gemm_3(%[[A]],
  func.func private @preserve_other_shape(%a: memref<4x112xf32>, %b: memref<112x8xf32>, %c: memref<4x8xf32>) {
    func.call @dlc_gemm_3(%a, %b, %c) : (memref<4x112xf32>, memref<112x8xf32>, memref<4x8xf32>) -> ()
    func.return
  }

  // CHECK:       "memref.global"() <{sym_name = "u.rows128", type = memref<2x128xf32>
  // CHECK-LABEL: func.func @main
  // CHECK:       %[[U:.*]] = memref.get_global @u.rows128 : memref<2x128xf32>
  // CHECK-NEXT:  func.call @shorter_rows(%[[U]],
  func.func @main(%b0: memref<112x8xf32>, %b1: memref<128x8xf32>, %b2: memref<96x8xf32>, %c: memref<2x8xf32>, %c4: memref<4x8xf32>) {
    %u = memref.get_global @u : memref<2x112xf32>
    %v = memref.get_global @v : memref<2x128xf32>
    %w = memref.get_global @w : memref<2x96xf32>
    %x = memref.get_global @x : memref<4x112xf32>
    func.call @shorter_rows(%u, %b0, %c) : (memref<2x112xf32>, memref<112x8xf32>, memref<2x8xf32>) -> ()
    func.call @longest_rows(%v, %b1, %c) : (memref<2x128xf32>, memref<128x8xf32>, memref<2x8xf32>) -> ()
    func.call @preserve_far_shorter_rows(%w, %b2, %c) : (memref<2x96xf32>, memref<96x8xf32>, memref<2x8xf32>) -> ()
    func.call @preserve_other_shape(%x, %b0, %c4) : (memref<4x112xf32>, memref<112x8xf32>, memref<4x8xf32>) -> ()
    func.return
  }
}
