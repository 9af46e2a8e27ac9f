// RUN: cp %s %t.mlir
// RUN: python -c "import numpy as np; np.savez('%t.weights.npz', w=np.arange(32, dtype=np.float32).reshape(4, 8), x=np.ones((8, 4), np.float32))"
// RUN: dlc opt %t.mlir -p pack-weights | filecheck %s

// The constant B (4x8) of a GEMM micro-kernel becomes a packed weight of nr-column
// panels (here nr=16: one 16-wide panel, zero-padded), read by the kernel directly.
// A GEMM whose B is an activation (@k_act) is left alone.

builtin.module attributes {dlc.vector_bits = 512 : i64} {
  "memref.global"() <{sym_name = "w", type = memref<4x8xf32>, initial_value, sym_visibility = "private", constant}> : () -> ()
  func.func private @dlc_gemm_0(memref<2x4xf32>, memref<4x8xf32>, memref<2x8xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 2 : i64, n = 8 : i64, k = 4 : i64, a_row_stride = 4 : i64, a_k_stride = 1 : i64, ldb = 8 : i64, ldc = 8 : i64, b_trans = 0 : i64, residual = 0 : i64, b_layout = "row"}}
  func.func private @dlc_gemm_1(memref<2x4xf32>, memref<4x8xf32>, memref<2x8xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 2 : i64, n = 8 : i64, k = 4 : i64, a_row_stride = 4 : i64, a_k_stride = 1 : i64, ldb = 8 : i64, ldc = 8 : i64, b_trans = 0 : i64, residual = 0 : i64, b_layout = "row"}}
  func.func private @k_const(%a: memref<2x4xf32>, %b: memref<4x8xf32>, %c: memref<2x8xf32>) {
    func.call @dlc_gemm_0(%a, %b, %c) : (memref<2x4xf32>, memref<4x8xf32>, memref<2x8xf32>) -> ()
    func.return
  }
  func.func private @k_act(%a: memref<2x4xf32>, %b: memref<4x8xf32>, %c: memref<2x8xf32>) {
    func.call @dlc_gemm_1(%a, %b, %c) : (memref<2x4xf32>, memref<4x8xf32>, memref<2x8xf32>) -> ()
    func.return
  }
  func.func @main(%x: memref<2x4xf32>, %y: memref<2x8xf32>, %z: memref<2x8xf32>, %act: memref<4x8xf32>) {
    %w = memref.get_global @w : memref<4x8xf32>
    func.call @k_const(%x, %w, %y) : (memref<2x4xf32>, memref<4x8xf32>, memref<2x8xf32>) -> ()
    func.call @k_act(%x, %act, %z) : (memref<2x4xf32>, memref<4x8xf32>, memref<2x8xf32>) -> ()
    func.return
  }
}

// CHECK:      func.func private @dlc_gemm_0(memref<2x4xf32>, memref<1x4x16xf32>, memref<2x8xf32>)
// CHECK-SAME:   b_layout = "packed"
// CHECK-SAME:   nr = 16 : i64
// CHECK:      func.func private @dlc_gemm_1(memref<2x4xf32>, memref<4x8xf32>, memref<2x8xf32>)
// CHECK-SAME:   b_layout = "row"
// CHECK:      func.func private @k_const(%{{.*}}: memref<2x4xf32>, %[[B:.*]]: memref<1x4x16xf32>, %{{.*}}: memref<2x8xf32>)
// CHECK-NEXT:   func.call @dlc_gemm_0(%{{.*}}, %[[B]], %{{.*}})
// CHECK:      "memref.global"() <{sym_name = "w.packed16", type = memref<1x4x16xf32>
// CHECK:      func.func @main
// CHECK:        %[[P:.*]] = memref.get_global @w.packed16 : memref<1x4x16xf32>
// CHECK-NEXT:   func.call @k_const(%{{.*}}, %[[P]], %{{.*}})
// CHECK-NEXT:   func.call @k_act
