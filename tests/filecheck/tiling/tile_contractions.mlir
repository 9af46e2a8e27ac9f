// RUN: dlc opt %s -p tile-contractions | filecheck %s

// Tiles come from the target description on the module: AVX-512 (16 lanes) gives a
// 14x32 register tile for this conv-shaped GEMM; tiles already in the IR
// (@preserve_set_tiles) are kept.

builtin.module attributes {dlc.vector_bits = 512 : i64, dlc.l1_bytes = 49152 : i64, dlc.l2_bytes = 2097152 : i64} {
  // CHECK-LABEL: func.func private @dlc_gemm_0
  // CHECK-SAME:  mr = 14 : i64, nr = 32 : i64, kc = 576 : i64
  func.func private @dlc_gemm_0(memref<64x576xf32>, memref<576x3136xf32>, memref<64x3136xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 3136 : i64, n = 64 : i64, k = 576 : i64, a_row_stride = 576 : i64, a_k_stride = 1 : i64, ldb = 64 : i64, ldc = 64 : i64, b_layout = "packed"}}
  // CHECK-LABEL: func.func private @preserve_set_tiles
  // CHECK-SAME:  mr = 4 : i64, nr = 16 : i64, kc = 64 : i64, mc = 64 : i64, nc = 64 : i64}}
  func.func private @preserve_set_tiles(memref<64x576xf32>, memref<576x3136xf32>, memref<64x3136xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 3136 : i64, n = 64 : i64, k = 576 : i64, a_row_stride = 576 : i64, a_k_stride = 1 : i64, ldb = 64 : i64, ldc = 64 : i64, b_layout = "packed", mr = 4 : i64, nr = 16 : i64, kc = 64 : i64, mc = 64 : i64, nc = 64 : i64}}
}

