// RUN: dlc opt %s -p plan-memory | filecheck %s

// Three 4 KiB buffers in a chain: %a dies when %c is written, so %c reuses its
// space; the arena holds two buffers, not three. Offsets are 64-byte aligned.

builtin.module {
  func.func private @k(%0: memref<32x32xf32>, %1: memref<32x32xf32>) {
    func.return
  }
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

// CHECK:      func.func @main(%{{.*}}: memref<32x32xf32>, %{{.*}}: memref<32x32xf32>, %[[ARENA:.*]]: memref<8192xi8>)
// CHECK-SAME:   dlc.arena_size = 8192 : i64
// CHECK-NOT:  memref.alloc
// CHECK:      %[[OA:.*]] = arith.constant [[OFF_A:[0-9]+]] : index
// CHECK-NEXT: %[[A:.*]] = memref.view %[[ARENA]][%[[OA]]][] : memref<8192xi8> to memref<32x32xf32>
// CHECK:      %[[OB:.*]] = arith.constant [[OFF_B:[0-9]+]] : index
// CHECK:      %[[OC:.*]] = arith.constant [[OFF_A]] : index
