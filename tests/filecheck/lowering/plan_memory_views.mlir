// RUN: dlc opt %s -p plan-memory | filecheck %s

// A buffer read through a memref.view (a Concat run in place: kernels-to-linalg) stays alive
// until the view's last use: %c, allocated after the view was made but while it is still read,
// must not take its place.

builtin.module {
  // A kernel allocates nothing: it stays as it is.
  // CHECK-LABEL: func.func private @k
  // CHECK-NEXT:  func.return
  // CHECK-NOT:   memref.alloc
  func.func private @k(%0: memref<32x32xf32>, %1: memref<32x32xf32>) {
    func.return
  }

  // Two buffers side by side: 8192 bytes (sharing the space, 4096).
  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  dlc.arena_size = 8192 : i64
  // CHECK:       %[[OA:.*]] = arith.constant 0 : index
  // CHECK-NEXT:  %[[A:.*]] = memref.view %{{.*}}[%[[OA]]][] : memref<8192xi8> to memref<4096xi8>
  // CHECK:       %[[OC:.*]] = arith.constant 4096 : index
  // CHECK-NEXT:  %{{.*}} = memref.view %{{.*}}[%[[OC]]][] : memref<8192xi8> to memref<32x32xf32>
  // CHECK-NOT:   memref.alloc
  // CHECK:       func.return
  func.func @main(%x: memref<32x32xf32>, %y: memref<32x32xf32>) {
    %a = memref.alloc() : memref<4096xi8>
    %zero = arith.constant 0 : index
    %av = memref.view %a[%zero][] : memref<4096xi8> to memref<32x32xf32>
    func.call @k(%x, %av) : (memref<32x32xf32>, memref<32x32xf32>) -> ()
    %c = memref.alloc() : memref<32x32xf32>
    func.call @k(%av, %c) : (memref<32x32xf32>, memref<32x32xf32>) -> ()
    func.call @k(%c, %y) : (memref<32x32xf32>, memref<32x32xf32>) -> ()
    func.return
  }
}
