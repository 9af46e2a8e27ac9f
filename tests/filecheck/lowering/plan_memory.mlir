// RUN: dlc opt %s -p plan-memory | filecheck %s

// Three 4 KiB buffers in a chain: %a dies when %c is written, so %c reuses its
// space; the arena holds two buffers, not three. Offsets are 64-byte aligned.

builtin.module {
  // A kernel allocates nothing: it stays as it is.
  // CHECK-LABEL: func.func private @k
  // CHECK-SAME:  (%{{.*}}: memref<32x32xf32>, %{{.*}}: memref<32x32xf32>)
  // CHECK-NEXT:  func.return
  func.func private @k(%0: memref<32x32xf32>, %1: memref<32x32xf32>) {
    func.return
  }

  // CHECK-LABEL: func.func @main
  // CHECK-SAME:  (%[[X:.*]]: memref<32x32xf32>, %[[Y:.*]]: memref<32x32xf32>, %[[ARENA:.*]]: memref<8192xi8>)
  // CHECK-SAME:  dlc.arena_size = 8192 : i64
  // CHECK-NOT:   memref.alloc
  // CHECK:       %[[OA:.*]] = arith.constant [[OFF_A:[0-9]+]] : index
  // CHECK-NEXT:  %[[A:.*]] = memref.view %[[ARENA]][%[[OA]]][] : memref<8192xi8> to memref<32x32xf32>
  // CHECK-NEXT:  func.call @k(%[[X]], %[[A]])
  // CHECK-NEXT:  %[[OB:.*]] = arith.constant [[OFF_B:[0-9]+]] : index
  // CHECK-NEXT:  %[[B:.*]] = memref.view %[[ARENA]][%[[OB]]][]
  // CHECK-NEXT:  func.call @k(%[[A]], %[[B]])
  // CHECK-NEXT:  %[[OC:.*]] = arith.constant [[OFF_A]] : index
  // CHECK-NEXT:  %[[C:.*]] = memref.view %[[ARENA]][%[[OC]]][]
  // CHECK-NEXT:  func.call @k(%[[B]], %[[C]])
  // CHECK-NEXT:  func.call @k(%[[C]], %[[Y]])
  // CHECK-NOT:   memref.alloc
  func.func @main(%x: memref<32x32xf32>, %y: memref<32x32xf32>) {
    %a = memref.alloc() : memref<32x32xf32>
    func.call @k(%x, %a) : (memref<32x32xf32>, memref<32x32xf32>) -> ()
    %b = memref.alloc() : memref<32x32xf32>
    func.call @k(%a, %b) : (memref<32x32xf32>, memref<32x32xf32>) -> ()
    %c = memref.alloc() : memref<32x32xf32>
    func.call @k(%b, %c) : (memref<32x32xf32>, memref<32x32xf32>) -> ()
    func.call @k(%c, %y) : (memref<32x32xf32>, memref<32x32xf32>) -> ()
    func.return
  }
}
