// RUN: dlc opt %s -p overwrite-dead-residuals | filecheck %s

// Two conv + Add(residual) + Relu kernels as kernels-to-linalg writes them (a GEMM reading its
// residual R through the same view as its output C). @add0's residual %r0 dies with it, so
// its output is written over %r0: the kernel loses the argument, @main its alloc, and the
// GEMM reads R from C (residual_in_c: tile-contractions keeps k in one block). @add1's residual
// (@add0's output) is read again afterwards (by @use), so @add1 keeps a buffer of its own; so
// does @add2, whose GEMM's kc (a user's --tile, say) splits k: its partial sums would
// overwrite R before the last k block adds it.

builtin.module {
  // CHECK:      func.func private @dlc_gemm_0
  // CHECK-SAME: residual_in_c = 1 : i64
  func.func private @dlc_gemm_0(memref<64x64xf32>, memref<64x32xf32>, memref<64x32xf32>, memref<32xf32>, memref<64x32xf32>) -> () attributes {dlc.ukernel = "gemm", dlc.gemm = {b_layout = "row", m = 64 : i64, n = 32 : i64, k = 64 : i64, a_row_stride = 64 : i64, a_k_stride = 1 : i64, ldb = 32 : i64, ldc = 32 : i64, bias = "row", activation = "relu", residual = 1 : i64}}
  // CHECK:      func.func private @dlc_gemm_1
  // CHECK-NOT:  residual_in_c
  // CHECK-SAME: residual = 1 : i64}
  func.func private @dlc_gemm_1(memref<64x64xf32>, memref<64x32xf32>, memref<64x32xf32>, memref<32xf32>, memref<64x32xf32>) -> () attributes {dlc.ukernel = "gemm", dlc.gemm = {b_layout = "row", m = 64 : i64, n = 32 : i64, k = 64 : i64, a_row_stride = 64 : i64, a_k_stride = 1 : i64, ldb = 32 : i64, ldc = 32 : i64, bias = "row", activation = "relu", residual = 1 : i64}}
  // CHECK:      func.func private @dlc_gemm_2
  // CHECK-NOT:  residual_in_c
  // CHECK-SAME: residual = 1 : i64}
  func.func private @dlc_gemm_2(memref<64x64xf32>, memref<64x32xf32>, memref<64x32xf32>, memref<32xf32>, memref<64x32xf32>) -> () attributes {dlc.ukernel = "gemm", dlc.gemm = {b_layout = "row", m = 64 : i64, n = 32 : i64, k = 64 : i64, a_row_stride = 64 : i64, a_k_stride = 1 : i64, ldb = 32 : i64, ldc = 32 : i64, kc = 16 : i64, bias = "row", activation = "relu", residual = 1 : i64}}

  func.func private @make(%0: memref<64x64xf32>, %1: memref<1x64x32xf32>) {
    func.return
  }
  func.func private @use(%0: memref<1x64x32xf32>, %1: memref<1x64x32xf32>) {
    func.return
  }

  // CHECK-LABEL: func.func private @add0
  // CHECK-SAME:  (%[[X:.*]]: memref<64x64xf32>, %[[W:.*]]: memref<64x32xf32>, %[[B:.*]]: memref<32xf32>, %[[Y:.*]]: memref<1x64x32xf32>)
  // CHECK-SAME:  dlc.overwrites_residual
  // CHECK-NEXT:  %[[C:.*]] = memref.reinterpret_cast %[[Y]]
  // CHECK-NEXT:  %[[R:.*]] = memref.reinterpret_cast %[[Y]]
  // CHECK-NEXT:  func.call @dlc_gemm_0(%[[X]], %[[W]], %[[C]], %[[B]], %[[R]])
  func.func private @add0(%x: memref<64x64xf32>, %w: memref<64x32xf32>, %b: memref<32xf32>, %r: memref<1x64x32xf32>, %y: memref<1x64x32xf32>) attributes {dlc.bytes = 40960 : i64} {
    %c = memref.reinterpret_cast %y to offset: [0], sizes: [64, 32], strides: [32, 1] : memref<1x64x32xf32> to memref<64x32xf32>
    %rr = memref.reinterpret_cast %r to offset: [0], sizes: [64, 32], strides: [32, 1] : memref<1x64x32xf32> to memref<64x32xf32>
    func.call @dlc_gemm_0(%x, %w, %c, %b, %rr) : (memref<64x64xf32>, memref<64x32xf32>, memref<64x32xf32>, memref<32xf32>, memref<64x32xf32>) -> ()
    func.return
  }

  // CHECK-LABEL: func.func private @add1
  // CHECK-SAME:  %{{.*}}: memref<1x64x32xf32>, %{{.*}}: memref<1x64x32xf32>)
  // CHECK-NOT:   dlc.overwrites_residual
  func.func private @add1(%x: memref<64x64xf32>, %w: memref<64x32xf32>, %b: memref<32xf32>, %r: memref<1x64x32xf32>, %y: memref<1x64x32xf32>) {
    %c = memref.reinterpret_cast %y to offset: [0], sizes: [64, 32], strides: [32, 1] : memref<1x64x32xf32> to memref<64x32xf32>
    %rr = memref.reinterpret_cast %r to offset: [0], sizes: [64, 32], strides: [32, 1] : memref<1x64x32xf32> to memref<64x32xf32>
    func.call @dlc_gemm_1(%x, %w, %c, %b, %rr) : (memref<64x64xf32>, memref<64x32xf32>, memref<64x32xf32>, memref<32xf32>, memref<64x32xf32>) -> ()
    func.return
  }

  // CHECK-LABEL: func.func private @add2
  // CHECK-SAME:  %{{.*}}: memref<1x64x32xf32>, %{{.*}}: memref<1x64x32xf32>)
  // CHECK-NOT:   dlc.overwrites_residual
  func.func private @add2(%x: memref<64x64xf32>, %w: memref<64x32xf32>, %b: memref<32xf32>, %r: memref<1x64x32xf32>, %y: memref<1x64x32xf32>) {
    %c = memref.reinterpret_cast %y to offset: [0], sizes: [64, 32], strides: [32, 1] : memref<1x64x32xf32> to memref<64x32xf32>
    %rr = memref.reinterpret_cast %r to offset: [0], sizes: [64, 32], strides: [32, 1] : memref<1x64x32xf32> to memref<64x32xf32>
    func.call @dlc_gemm_2(%x, %w, %c, %b, %rr) : (memref<64x64xf32>, memref<64x32xf32>, memref<64x32xf32>, memref<32xf32>, memref<64x32xf32>) -> ()
    func.return
  }

  // CHECK-LABEL: func.func @main
  // CHECK:       %[[R0:.*]] = memref.alloc()
  // CHECK-NEXT:  func.call @make(%{{.*}}, %[[R0]])
  // CHECK-NEXT:  func.call @add0(%{{.*}}, %{{.*}}, %{{.*}}, %[[R0]])
  // CHECK-NEXT:  %[[R1:.*]] = memref.alloc()
  // CHECK-NEXT:  func.call @make(%{{.*}}, %[[R1]])
  // CHECK-NEXT:  %[[Y1:.*]] = memref.alloc()
  // CHECK-NEXT:  func.call @add1(%{{.*}}, %{{.*}}, %{{.*}}, %[[R0]], %[[Y1]])
  // CHECK-NEXT:  func.call @use(%[[Y1]], %[[R0]])
  // CHECK-NEXT:  %[[Y2:.*]] = memref.alloc()
  // CHECK-NEXT:  func.call @add2(%{{.*}}, %{{.*}}, %{{.*}}, %[[Y1]], %[[Y2]])
  // CHECK-NEXT:  func.call @use(%[[Y2]], %[[Y2]])
  func.func @main(%x: memref<64x64xf32>, %w: memref<64x32xf32>, %b: memref<32xf32>) {
    %r0 = memref.alloc() : memref<1x64x32xf32>
    func.call @make(%x, %r0) : (memref<64x64xf32>, memref<1x64x32xf32>) -> ()
    %y0 = memref.alloc() : memref<1x64x32xf32>
    func.call @add0(%x, %w, %b, %r0, %y0) : (memref<64x64xf32>, memref<64x32xf32>, memref<32xf32>, memref<1x64x32xf32>, memref<1x64x32xf32>) -> ()
    %r1 = memref.alloc() : memref<1x64x32xf32>
    func.call @make(%x, %r1) : (memref<64x64xf32>, memref<1x64x32xf32>) -> ()
    %y1 = memref.alloc() : memref<1x64x32xf32>
    func.call @add1(%x, %w, %b, %y0, %y1) : (memref<64x64xf32>, memref<64x32xf32>, memref<32xf32>, memref<1x64x32xf32>, memref<1x64x32xf32>) -> ()
    func.call @use(%y1, %y0) : (memref<1x64x32xf32>, memref<1x64x32xf32>) -> ()
    %y2 = memref.alloc() : memref<1x64x32xf32>
    func.call @add2(%x, %w, %b, %y1, %y2) : (memref<64x64xf32>, memref<64x32xf32>, memref<32xf32>, memref<1x64x32xf32>, memref<1x64x32xf32>) -> ()
    func.call @use(%y2, %y2) : (memref<1x64x32xf32>, memref<1x64x32xf32>) -> ()
    func.return
  }
}
