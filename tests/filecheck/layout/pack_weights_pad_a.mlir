// RUN: python %S/../npz.py %t.weights.npz "w=np.ones((2, 1024), np.float32)" "v=np.ones((2, 512), np.float32)"
// RUN: cp %s %t.mlir && dlc opt %t.mlir -p pack-weights | filecheck %s

// A constant A (a convolution's weights) whose rows lie 4 KiB apart (k = 1024 floats) gets
// one cache line of padding per row (a_row_stride 1040), so the rows a micro-kernel step
// reads fall in different L1 sets. Rows 2 KiB apart (@preserve_short_rows, k = 512) are
// left alone.

builtin.module attributes {dlc.vector_bits = 512 : i64} {
  "memref.global"() <{sym_name = "w", type = memref<2x1024xf32>, initial_value, sym_visibility = "private", constant}> : () -> ()
  "memref.global"() <{sym_name = "v", type = memref<2x512xf32>, initial_value, sym_visibility = "private", constant}> : () -> ()

  // CHECK-LABEL: func.func private @dlc_gemm_0
  // CHECK-SAME:  (memref<2x1040xf32>, memref<1024x8xf32>, memref<2x8xf32>)
  // CHECK-SAME:  a_row_stride = 1040 : i64
  func.func private @dlc_gemm_0(memref<2x1024xf32>, memref<1024x8xf32>, memref<2x8xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 2 : i64, n = 8 : i64, k = 1024 : i64, a_row_stride = 1024 : i64, a_k_stride = 1 : i64, ldb = 8 : i64, ldc = 8 : i64, residual = 0 : i64, b_layout = "window"}}

  // CHECK-LABEL: func.func private @dlc_gemm_1
  // CHECK-SAME:  (memref<2x512xf32>, memref<512x8xf32>, memref<2x8xf32>)
  // CHECK-SAME:  a_row_stride = 512 : i64
  func.func private @dlc_gemm_1(memref<2x512xf32>, memref<512x8xf32>, memref<2x8xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 2 : i64, n = 8 : i64, k = 512 : i64, a_row_stride = 512 : i64, a_k_stride = 1 : i64, ldb = 8 : i64, ldc = 8 : i64, residual = 0 : i64, b_layout = "window"}}

  // CHECK-LABEL: func.func private @long_rows
  // CHECK-SAME:  (%[[A:.*]]: memref<2x1040xf32>, %{{.*}}: memref<1024x8xf32>, %{{.*}}: memref<2x8xf32>)
  // CHECK-NEXT:  func.call @dlc_gemm_0(%[[A]],
  func.func private @long_rows(%a: memref<2x1024xf32>, %b: memref<1024x8xf32>, %c: memref<2x8xf32>) {
    func.call @dlc_gemm_0(%a, %b, %c) : (memref<2x1024xf32>, memref<1024x8xf32>, memref<2x8xf32>) -> ()
    func.return
  }

  // CHECK-LABEL: func.func private @preserve_short_rows
  // CHECK-SAME:  (%[[A:.*]]: memref<2x512xf32>, %{{.*}}: memref<512x8xf32>, %{{.*}}: memref<2x8xf32>)
  // CHECK-NEXT:  func.call @dlc_gemm_1(%[[A]],
  func.func private @preserve_short_rows(%a: memref<2x512xf32>, %b: memref<512x8xf32>, %c: memref<2x8xf32>) {
    func.call @dlc_gemm_1(%a, %b, %c) : (memref<2x512xf32>, memref<512x8xf32>, memref<2x8xf32>) -> ()
    func.return
  }

  // CHECK:       "memref.global"() <{sym_name = "w.rows1040", type = memref<2x1040xf32>
  // CHECK-LABEL: func.func @main
  // CHECK:       %[[V:.*]] = memref.get_global @v : memref<2x512xf32>
  // CHECK-NEXT:  %[[P:.*]] = memref.get_global @w.rows1040 : memref<2x1040xf32>
  // CHECK-NEXT:  func.call @long_rows(%[[P]],
  // CHECK-NEXT:  func.call @preserve_short_rows(%[[V]],
  func.func @main(%x: memref<1024x8xf32>, %y: memref<2x8xf32>, %x2: memref<512x8xf32>, %z: memref<2x8xf32>) {
    %w = memref.get_global @w : memref<2x1024xf32>
    %v = memref.get_global @v : memref<2x512xf32>
    func.call @long_rows(%w, %x, %y) : (memref<2x1024xf32>, memref<1024x8xf32>, memref<2x8xf32>) -> ()
    func.call @preserve_short_rows(%v, %x2, %z) : (memref<2x512xf32>, memref<512x8xf32>, memref<2x8xf32>) -> ()
    func.return
  }
}
