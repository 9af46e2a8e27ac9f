// RUN: python %S/../npz.py %t.weights.npz "w=np.arange(32, dtype=np.float32).reshape(4, 8)"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p pack-weights | filecheck %s

// The constant B (4x8) of a GEMM micro-kernel becomes a packed weight of nr-column
// panels (here nr=16: one 16-wide panel, zero-padded), read by the kernel directly.
// A GEMM whose B is an activation (@preserve_activation_b) is left alone.

builtin.module attributes {dlc.vector_bits = 512 : i64} {
  "memref.global"() <{sym_name = "w", type = memref<4x8xf32>, initial_value, sym_visibility = "private", constant}> : () -> ()

  // CHECK-LABEL: func.func private @dlc_gemm_0
  // CHECK-SAME:  (memref<2x4xf32>, memref<1x4x16xf32>, memref<2x8xf32>)
  // CHECK-SAME:  b_layout = "packed", nr = 16 : i64
  func.func private @dlc_gemm_0(memref<2x4xf32>, memref<4x8xf32>, memref<2x8xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 2 : i64, n = 8 : i64, k = 4 : i64, a_row_stride = 4 : i64, a_k_stride = 1 : i64, ldb = 8 : i64, ldc = 8 : i64, b_trans = 0 : i64, residual = 0 : i64, b_layout = "row"}}

  // CHECK-LABEL: func.func private @dlc_gemm_1
  // CHECK-SAME:  (memref<2x4xf32>, memref<4x8xf32>, memref<2x8xf32>)
  // CHECK-SAME:  b_layout = "row"}
  func.func private @dlc_gemm_1(memref<2x4xf32>, memref<4x8xf32>, memref<2x8xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 2 : i64, n = 8 : i64, k = 4 : i64, a_row_stride = 4 : i64, a_k_stride = 1 : i64, ldb = 8 : i64, ldc = 8 : i64, b_trans = 0 : i64, residual = 0 : i64, b_layout = "row"}}

  // CHECK-LABEL: func.func private @constant_b
  // CHECK-SAME:  (%[[A:.*]]: memref<2x4xf32>, %[[B:.*]]: memref<1x4x16xf32>, %[[C:.*]]: memref<2x8xf32>)
  // CHECK-NEXT:  func.call @dlc_gemm_0(%[[A]], %[[B]], %[[C]])
  func.func private @constant_b(%a: memref<2x4xf32>, %b: memref<4x8xf32>, %c: memref<2x8xf32>) {
    func.call @dlc_gemm_0(%a, %b, %c) : (memref<2x4xf32>, memref<4x8xf32>, memref<2x8xf32>) -> ()
    func.return
  }

  // CHECK-LABEL: func.func private @preserve_activation_b
  // CHECK-SAME:  (%[[A:.*]]: memref<2x4xf32>, %[[B:.*]]: memref<4x8xf32>, %[[C:.*]]: memref<2x8xf32>)
  // CHECK-NEXT:  func.call @dlc_gemm_1(%[[A]], %[[B]], %[[C]])
  func.func private @preserve_activation_b(%a: memref<2x4xf32>, %b: memref<4x8xf32>, %c: memref<2x8xf32>) {
    func.call @dlc_gemm_1(%a, %b, %c) : (memref<2x4xf32>, memref<4x8xf32>, memref<2x8xf32>) -> ()
    func.return
  }

  // The packed weight is a new global beside the old one; @main passes it instead.
  // CHECK:       "memref.global"() <{sym_name = "w.packed16", type = memref<1x4x16xf32>
  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  (%[[X:.*]]: memref<2x4xf32>, %[[Y:.*]]: memref<2x8xf32>, %[[Z:.*]]: memref<2x8xf32>, %[[ACT:.*]]: memref<4x8xf32>)
  // CHECK:       %[[P:.*]] = memref.get_global @w.packed16 : memref<1x4x16xf32>
  // CHECK-NEXT:  func.call @constant_b(%[[X]], %[[P]], %[[Y]])
  // CHECK-NEXT:  func.call @preserve_activation_b(%[[X]], %[[ACT]], %[[Z]])
  func.func @main(%x: memref<2x4xf32>, %y: memref<2x8xf32>, %z: memref<2x8xf32>, %act: memref<4x8xf32>) {
    %w = memref.get_global @w : memref<4x8xf32>
    func.call @constant_b(%x, %w, %y) : (memref<2x4xf32>, memref<4x8xf32>, memref<2x8xf32>) -> ()
    func.call @preserve_activation_b(%x, %act, %z) : (memref<2x4xf32>, memref<4x8xf32>, memref<2x8xf32>) -> ()
    func.return
  }
}
