// RUN: dlc opt %s -p sink-views-into-parallel-loops | filecheck %s

// The static views a dlc.parallel loop reads and writes through are copied to the top of its
// body, a view of a view after its source, so the loop uses the kernel's buffers alone; the
// views outside that nothing uses any more go. Other loops are left as they are.

builtin.module {
  // Two views of x (one of them through a view of a view) and one of y: all three copied into
  // the loop, none left outside.
  // CHECK-LABEL: func.func private @views_of_arguments
  // CHECK-SAME:  (%[[X:.*]]: memref<4x8xf32>, %[[Y:.*]]: memref<4x8xf32>)
  // CHECK-NOT:     memref.reinterpret_cast
  // CHECK-NOT:     memref.collapse_shape
  // CHECK:         scf.for %[[I:.*]] = %{{.*}} to %{{.*}} step %{{.*}} {
  // CHECK-NEXT:      %[[A:.*]] = memref.reinterpret_cast %[[X]] to offset: [1]
  // CHECK-NEXT:      %[[FLAT:.*]] = memref.collapse_shape %[[X]]
  // CHECK-NEXT:      %[[B:.*]] = memref.reinterpret_cast %[[FLAT]] to offset: [0]
  // CHECK-NEXT:      %[[C:.*]] = memref.reinterpret_cast %[[Y]] to offset: [0]
  // CHECK-NEXT:      %[[LA:.*]] = memref.load %[[A]][%[[I]], %{{.*}}]
  // CHECK-NEXT:      %[[LB:.*]] = memref.load %[[B]][%[[I]]]
  // CHECK-NEXT:      %[[S:.*]] = arith.addf %[[LA]], %[[LB]] : f32
  // CHECK-NEXT:      memref.store %[[S]], %[[C]][%[[I]], %{{.*}}]
  // CHECK-NEXT:    } {dlc.parallel}
  // CHECK-NEXT:    func.return
  func.func private @views_of_arguments(%x: memref<4x8xf32>, %y: memref<4x8xf32>) {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c4 = arith.constant 4 : index
    %a = memref.reinterpret_cast %x to offset: [1], sizes: [4, 7], strides: [8, 1] : memref<4x8xf32> to memref<4x7xf32, strided<[8, 1], offset: 1>>
    %flat = memref.collapse_shape %x [[0, 1]] : memref<4x8xf32> into memref<32xf32>
    %b = memref.reinterpret_cast %flat to offset: [0], sizes: [4], strides: [8] : memref<32xf32> to memref<4xf32, strided<[8]>>
    %c = memref.reinterpret_cast %y to offset: [0], sizes: [4, 7], strides: [8, 1] : memref<4x8xf32> to memref<4x7xf32, strided<[8, 1]>>
    scf.for %i = %c0 to %c4 step %c1 {
      %la = memref.load %a[%i, %c0] : memref<4x7xf32, strided<[8, 1], offset: 1>>
      %lb = memref.load %b[%i] : memref<4xf32, strided<[8]>>
      %s = arith.addf %la, %lb : f32
      memref.store %s, %c[%i, %c0] : memref<4x7xf32, strided<[8, 1]>>
    } {dlc.parallel}
    func.return
  }

  // A view used after the loop too stays outside for that use; a loop without dlc.parallel
  // (run in place, nothing outlined) keeps using the view from outside.
  // CHECK-LABEL: func.func private @view_used_outside
  // CHECK-SAME:  (%[[X:.*]]: memref<4x8xf32>)
  // CHECK:         %[[V:.*]] = memref.reinterpret_cast %[[X]] to offset: [0]
  // CHECK:         scf.for
  // CHECK-NEXT:      %[[W:.*]] = memref.reinterpret_cast %[[X]] to offset: [0]
  // CHECK-NEXT:      memref.store %{{.*}}, %[[W]]
  // CHECK-NEXT:    } {dlc.parallel}
  // CHECK-NEXT:    scf.for
  // CHECK-NEXT:      memref.store %{{.*}}, %[[V]]
  // CHECK-NEXT:    }
  // CHECK-NEXT:    func.return
  func.func private @view_used_outside(%x: memref<4x8xf32>) {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c4 = arith.constant 4 : index
    %f = arith.constant 1.0 : f32
    %v = memref.reinterpret_cast %x to offset: [0], sizes: [4], strides: [8] : memref<4x8xf32> to memref<4xf32, strided<[8]>>
    scf.for %i = %c0 to %c4 step %c1 {
      memref.store %f, %v[%i] : memref<4xf32, strided<[8]>>
    } {dlc.parallel}
    scf.for %j = %c0 to %c4 step %c1 {
      memref.store %f, %v[%j] : memref<4xf32, strided<[8]>>
    }
    func.return
  }
}
