// RUN: python %S/../npz.py %t.weights.npz "w=np.arange(40, dtype=np.int8).reshape(5, 8)"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p pack-weights | filecheck %s

// The constant int8 B (5x8) of an integer GEMM (dtype "u8s8") is packed for vpdpbusd:
// panels of nr columns, each a run of groups of four k values per column (k padded to 8,
// n to 16): memref<panels x k/4 x nr x 4 x i8>.

builtin.module attributes {dlc.vector_bits = 512 : i64} {
  "memref.global"() <{sym_name = "w", type = memref<5x8xi8>, initial_value, sym_visibility = "private", constant}> : () -> ()

  // CHECK-LABEL: func.func private @dlc_gemm_0
  // CHECK-SAME:  (memref<3x5xui8>, memref<1x2x16x4xi8>, memref<3x8xi32>)
  // CHECK-SAME:  b_layout = "packed"
  // CHECK-SAME:  dtype = "u8s8"
  // CHECK-SAME:  nr = 16 : i64
  // The int8 layout, never the float one (16 floats a row) nor the row-major weight:
  // CHECK-NOT:   b_layout = "row"
  // CHECK-NOT:   memref<1x5x16xi8>
  func.func private @dlc_gemm_0(memref<3x5xui8>, memref<5x8xi8>, memref<3x8xi32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 3 : i64, n = 8 : i64, k = 5 : i64, a_row_stride = 5 : i64, a_k_stride = 1 : i64, ldb = 8 : i64, ldc = 8 : i64, b_trans = 0 : i64, residual = 0 : i64, b_layout = "row", dtype = "u8s8", dot = "vpdpbusd", kc = 8 : i64}}

  // CHECK-LABEL: func.func private @kernel
  // CHECK:       func.call @dlc_gemm_0(%{{.*}}, %{{.*}}, %{{.*}}) : (memref<3x5xui8>, memref<1x2x16x4xi8>, memref<3x8xi32>) -> ()
  func.func private @kernel(%a: memref<3x5xui8>, %b: memref<5x8xi8>, %c: memref<3x8xi32>) {
    func.call @dlc_gemm_0(%a, %b, %c) : (memref<3x5xui8>, memref<5x8xi8>, memref<3x8xi32>) -> ()
    func.return
  }

  // CHECK:       "memref.global"() <{sym_name = "w.packed16", type = memref<1x2x16x4xi8>
  // CHECK-LABEL: func.func @main
  // CHECK:       memref.get_global @w.packed16 : memref<1x2x16x4xi8>
  func.func @main(%a: memref<3x5xui8>, %c: memref<3x8xi32>) {
    %w = memref.get_global @w : memref<5x8xi8>
    func.call @kernel(%a, %w, %c) : (memref<3x5xui8>, memref<5x8xi8>, memref<3x8xi32>) -> ()
    func.return
  }
}
