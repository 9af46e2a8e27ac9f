// RUN: cp %s %t.mlir
// RUN: python -c "import numpy as np; np.savez('%t.weights.npz', w=np.ones((2, 1024), np.float32), v=np.ones((2, 512), np.float32))"
// RUN: dlc opt %t.mlir -p pack-weights | filecheck %s

// A constant A (a convolution's weights) whose rows lie 4 KiB apart (k = 1024 floats) gets
// one cache line of padding per row (a_row_stride 1040), so the rows a micro-kernel step
// reads fall in different L1 sets. Rows 2 KiB apart (@k_short, k = 512) are left alone.

builtin.module attributes {dlc.vector_bits = 512 : i64} {
  "memref.global"() <{sym_name = "w", type = memref<2x1024xf32>, initial_value, sym_visibility = "private", constant}> : () -> ()
  "memref.global"() <{sym_name = "v", type = memref<2x512xf32>, initial_value, sym_visibility = "private", constant}> : () -> ()
  func.func private @dlc_gemm_0(memref<2x1024xf32>, memref<1024x8xf32>, memref<2x8xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 2 : i64, n = 8 : i64, k = 1024 : i64, a_row_stride = 1024 : i64, a_k_stride = 1 : i64, ldb = 8 : i64, ldc = 8 : i64, residual = 0 : i64, b_layout = "window"}}
  func.func private @dlc_gemm_1(memref<2x512xf32>, memref<512x8xf32>, memref<2x8xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 2 : i64, n = 8 : i64, k = 512 : i64, a_row_stride = 512 : i64, a_k_stride = 1 : i64, ldb = 8 : i64, ldc = 8 : i64, residual = 0 : i64, b_layout = "window"}}
  func.func private @k_long(%a: memref<2x1024xf32>, %b: memref<1024x8xf32>, %c: memref<2x8xf32>) {
    func.call @dlc_gemm_0(%a, %b, %c) : (memref<2x1024xf32>, memref<1024x8xf32>, memref<2x8xf32>) -> ()
    func.return
  }
  func.func private @k_short(%a: memref<2x512xf32>, %b: memref<512x8xf32>, %c: memref<2x8xf32>) {
    func.call @dlc_gemm_1(%a, %b, %c) : (memref<2x512xf32>, memref<512x8xf32>, memref<2x8xf32>) -> ()
    func.return
  }
  func.func @main(%x: memref<1024x8xf32>, %y: memref<2x8xf32>, %x2: memref<512x8xf32>, %z: memref<2x8xf32>) {
    %w = memref.get_global @w : memref<2x1024xf32>
    %v = memref.get_global @v : memref<2x512xf32>
    func.call @k_long(%w, %x, %y) : (memref<2x1024xf32>, memref<1024x8xf32>, memref<2x8xf32>) -> ()
    func.call @k_short(%v, %x2, %z) : (memref<2x512xf32>, memref<512x8xf32>, memref<2x8xf32>) -> ()
    func.return
  }
}

// CHECK:      func.func private @dlc_gemm_0(memref<2x1040xf32>, memref<1024x8xf32>, memref<2x8xf32>)
// CHECK-SAME:   a_row_stride = 1040 : i64
// CHECK:      func.func private @dlc_gemm_1(memref<2x512xf32>, memref<512x8xf32>, memref<2x8xf32>)
// CHECK-SAME:   a_row_stride = 512 : i64
// CHECK:      func.func private @k_long(%[[A:.*]]: memref<2x1040xf32>, %{{.*}}: memref<1024x8xf32>, %{{.*}}: memref<2x8xf32>)
// CHECK-NEXT:   func.call @dlc_gemm_0(%[[A]],
// CHECK:      "memref.global"() <{sym_name = "w.rows1040", type = memref<2x1040xf32>
// CHECK:      func.func @main
// CHECK:        %[[P:.*]] = memref.get_global @w.rows1040 : memref<2x1040xf32>
// CHECK:        func.call @k_long(%[[P]],
