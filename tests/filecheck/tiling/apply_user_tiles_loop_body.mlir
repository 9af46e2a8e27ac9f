// RUN: dlc opt %s -p 'apply-user-tiles{tiles="1x1024x256:nr=32;lstm_0.k0_MatMul:kc=128;k0_MatMul:mr=8"}' | filecheck %s
// RUN: dlc opt %s -p 'apply-user-tiles{tiles="lstm_0.k0_MatMul:kc=64"}' | filecheck %s --check-prefix=BODY
// RUN: not dlc opt %s -p 'apply-user-tiles{tiles="lstm_1.k0_MatMul:kc=64"}' 2>&1 | filecheck %s --check-prefix=NONE

// GEMMs in a Loop body (dialects/loop.py: here a recurrent layer's time step, its GEMV by R^T)
// are selected like the module's: by shape, by '*', or by kernel as BODY.KERNEL, which names
// the body's kernel and not the outer module's kernel of the same name. A selector matching
// a body's GEMM only is no error; one matching no GEMM anywhere is, and lists the kernels.

builtin.module attributes {dlc.vector_bits = 512 : i64, dlc.l1_bytes = 49152 : i64, dlc.l2_bytes = 2097152 : i64} {
  // CHECK-LABEL: builtin.module @lstm_0
  // CHECK:       func.func private @dlc_gemm_0
  // CHECK-SAME:  b_layout = "row", nr = 32 : i64, kc = 128 : i64}}
  // BODY-LABEL:  builtin.module @lstm_0
  // BODY:        func.func private @dlc_gemm_0
  // BODY-SAME:   kc = 64 : i64
  builtin.module @lstm_0 {
    func.func private @dlc_gemm_0(memref<1x256xf32>, memref<256x1024xf32>, memref<1x1024xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 1 : i64, n = 1024 : i64, k = 256 : i64, a_row_stride = 256 : i64, a_k_stride = 1 : i64, ldb = 1024 : i64, ldc = 1024 : i64, b_layout = "row"}}
    func.func private @k0_MatMul(%a : memref<1x256xf32>, %b : memref<256x1024xf32>, %c : memref<1x1024xf32>) {
      func.call @dlc_gemm_0(%a, %b, %c) : (memref<1x256xf32>, memref<256x1024xf32>, memref<1x1024xf32>) -> ()
      func.return
    }
  }
  // CHECK-LABEL: func.func private @dlc_gemm_0(memref<64x256xf32>
  // CHECK-SAME:  b_layout = "row", mr = 8 : i64}}
  // CHECK-NOT:   kc =
  // CHECK:       func.func private @k0_MatMul
  // BODY-LABEL:  func.func private @dlc_gemm_0(memref<64x256xf32>
  // BODY-SAME:   b_layout = "row"}}
  // BODY-NOT:    kc =
  // BODY:        func.func private @k0_MatMul
  // NONE: tile override: no GEMM matches 'lstm_1.k0_MatMul'
  // NONE-NEXT: hint: {{.*}}: k0_MatMul, lstm_0.k0_MatMul
  func.func private @dlc_gemm_0(memref<64x256xf32>, memref<256x1024xf32>, memref<64x1024xf32>) attributes {dlc.ukernel = "gemm", dlc.gemm = {m = 64 : i64, n = 1024 : i64, k = 256 : i64, a_row_stride = 256 : i64, a_k_stride = 1 : i64, ldb = 1024 : i64, ldc = 1024 : i64, b_layout = "row"}}
  func.func private @k0_MatMul(%a : memref<64x256xf32>, %b : memref<256x1024xf32>, %c : memref<64x1024xf32>) {
    func.call @dlc_gemm_0(%a, %b, %c) : (memref<64x256xf32>, memref<256x1024xf32>, memref<64x1024xf32>) -> ()
    func.return
  }
}
