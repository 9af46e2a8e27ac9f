// RUN: dlc opt %s -p 'apply-user-tiles{tiles="*:kc=128;k1_Conv:mr=8,nr=32;64x3136x576:mc=64"},tile-contractions' | filecheck %s
// RUN: dlc opt %s -p apply-user-tiles | filecheck %s --check-prefix=NONE

// Entries apply in order to the GEMMs their selectors match ('*', a kernel that calls the
// GEMM, or its MxNxK shape); tile-contractions then chooses only the tiles left unset,
// around the user's (mc and nc stay multiples of mr and nr).

builtin.module attributes {dlc.vector_bits = 512 : i64, dlc.l1_bytes = 49152 : i64, dlc.l2_bytes = 2097152 : i64} {
  // CHECK-LABEL: func.func private @dlc_gemm_0
  // CHECK-SAME:  kc = 128 : i64, mc = 64 : i64
  // Without tiles the pass changes nothing: tile-contractions chooses them all later.
  // NONE-LABEL:  func.func private @dlc_gemm_0
  // NONE-NOT:    kc =
  // NONE-SAME:   b_layout = "row"}}
  func.func private @dlc_gemm_0(memref<64x576xf32>, memref<576x3136xf32>, memref<64x3136xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 64 : i64, n = 3136 : i64, k = 576 : i64, a_row_stride = 576 : i64, a_k_stride = 1 : i64, ldb = 3136 : i64, ldc = 3136 : i64, b_layout = "row"}}
  // CHECK-LABEL: func.func private @dlc_gemm_1
  // CHECK-SAME:  kc = 128 : i64, mr = 8 : i64, nr = 32 : i64, mc = 104 : i64, nc = 64 : i64
  // NONE-LABEL:  func.func private @dlc_gemm_1
  // NONE-SAME:   b_layout = "row"}}
  func.func private @dlc_gemm_1(memref<100x64xf32>, memref<64x49xf32>, memref<100x49xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 100 : i64, n = 49 : i64, k = 64 : i64, a_row_stride = 64 : i64, a_k_stride = 1 : i64, ldb = 49 : i64, ldc = 49 : i64, b_layout = "row"}}
  func.func private @k0_Conv(%a : memref<64x576xf32>, %b : memref<576x3136xf32>, %c : memref<64x3136xf32>) {
    func.call @dlc_gemm_0(%a, %b, %c) : (memref<64x576xf32>, memref<576x3136xf32>, memref<64x3136xf32>) -> ()
    func.return
  }
  func.func private @k1_Conv(%a : memref<100x64xf32>, %b : memref<64x49xf32>, %c : memref<100x49xf32>) {
    func.call @dlc_gemm_1(%a, %b, %c) : (memref<100x64xf32>, memref<64x49xf32>, memref<100x49xf32>) -> ()
    func.return
  }
}

