// RUN: dlc opt %s -p mark-parallel-loops | filecheck %s

// A kernel's data-parallel generic of >= 32K iterations becomes loops; the first loop of
// more than one iteration is marked dlc.parallel when its iterations write disjoint
// elements. Other generics are left for convert-linalg-to-loops.

builtin.module {
  // CHECK-LABEL: func.func private @elementwise
  // CHECK:       scf.for
  // CHECK-NEXT:    scf.for
  // CHECK:           memref.store
  // CHECK-NEXT:    {{^ *}}}{{$}}
  // CHECK-NEXT:  } {dlc.parallel}
  func.func private @elementwise(%x: memref<256x256xf32>, %y: memref<256x256xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d1, d0)>],
                    iterator_types = ["parallel", "parallel"]}
        ins(%x : memref<256x256xf32>) outs(%y : memref<256x256xf32>) {
    ^bb0(%a: f32, %b: f32):
      %e = math.exp %a : f32
      linalg.yield %e : f32
    }
    func.return
  }

  // A batch of one: the loop over channels is split, inside the one-iteration batch loop.
  // CHECK-LABEL: func.func private @batch_of_one
  // CHECK:       scf.for
  // CHECK-NEXT:    scf.for
  // CHECK-NEXT:      scf.for
  // CHECK-NEXT:        scf.for
  // CHECK:               memref.store
  // CHECK-NEXT:        {{^ *}}}{{$}}
  // CHECK-NEXT:      {{^ *}}}{{$}}
  // CHECK-NEXT:    } {dlc.parallel}
  // CHECK-NEXT:  {{^ *}}}{{$}}
  // CHECK-NEXT:  func.return
  func.func private @batch_of_one(%x: memref<1x64x32x32xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>],
                    iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
        ins(%x : memref<1x64x32x32xf32>) outs(%x : memref<1x64x32x32xf32>) {
    ^bb0(%a: f32, %b: f32):
      %z = arith.constant 0.0 : f32
      %r = arith.maximumf %a, %z : f32
      linalg.yield %r : f32
    }
    func.return
  }

  // The interior of a padded buffer, written through a flat view: rows of 226 elements
  // land 232 apart, so two rows (values of d2) never write the same element.
  // CHECK-LABEL: func.func private @padded_copy
  // CHECK:       memref.store
  // CHECK-NEXT:  {{^ *}}}{{$}}
  // CHECK-NEXT:  } {dlc.parallel}
  // CHECK-NEXT:  {{^ *}}}{{$}}
  // CHECK-NEXT:  {{^ *}}}{{$}}
  // CHECK-NEXT:  func.return
  func.func private @padded_copy(%x: memref<1x1x226x226xf32>, %flat: memref<53824xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0 * 53824 + d2 * 232 + d3 + 233)>],
                    iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
        ins(%x : memref<1x1x226x226xf32>) outs(%flat : memref<53824xf32>) {
    ^bb0(%a: f32, %b: f32):
      linalg.yield %a : f32
    }
    func.return
  }

  // ReduceSum over axis 0: every iteration of d0 adds into the same output row.
  // CHECK-LABEL: func.func private @preserve_reduction_axis_0
  // CHECK-NOT:   dlc.parallel
  // CHECK:       linalg.generic
  func.func private @preserve_reduction_axis_0(%x: memref<256x256xf32>, %y: memref<256xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d1)>],
                    iterator_types = ["reduction", "parallel"]}
        ins(%x : memref<256x256xf32>) outs(%y : memref<256xf32>) {
    ^bb0(%a: f32, %acc: f32):
      %s = arith.addf %a, %acc : f32
      linalg.yield %s : f32
    }
    func.return
  }

  // Overlapping rows: d0 * 100 + d1 with d1 < 256, so two values of d0 may write one element.
  // CHECK-LABEL: func.func private @preserve_overlapping_writes
  // CHECK-NOT:   dlc.parallel
  // CHECK:       linalg.generic
  func.func private @preserve_overlapping_writes(%x: memref<256x256xf32>, %y: memref<25856xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0 * 100 + d1)>],
                    iterator_types = ["parallel", "parallel"]}
        ins(%x : memref<256x256xf32>) outs(%y : memref<25856xf32>) {
    ^bb0(%a: f32, %b: f32):
      linalg.yield %a : f32
    }
    func.return
  }

  // Two outputs viewing one buffer, the even and the odd columns of each row: rows (d0) stay
  // disjoint, every element a row writes lies within its 512, so the row loop is split.
  // CHECK-LABEL: func.func private @interleaved_outputs
  // CHECK:       scf.for
  // CHECK-NEXT:    scf.for
  // CHECK:           memref.store
  // CHECK:           memref.store
  // CHECK-NEXT:    {{^ *}}}{{$}}
  // CHECK-NEXT:  } {dlc.parallel}
  func.func private @interleaved_outputs(%x: memref<256x256xf32>, %y: memref<256x512xf32>) {
    %even = memref.subview %y[0, 0] [256, 256] [1, 2] : memref<256x512xf32> to memref<256x256xf32, strided<[512, 2]>>
    %odd = memref.subview %y[0, 1] [256, 256] [1, 2] : memref<256x512xf32> to memref<256x256xf32, strided<[512, 2], offset: 1>>
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0, d1)>],
                    iterator_types = ["parallel", "parallel"]}
        ins(%x : memref<256x256xf32>) outs(%even, %odd : memref<256x256xf32, strided<[512, 2]>>, memref<256x256xf32, strided<[512, 2], offset: 1>>) {
    ^bb0(%a: f32, %b: f32, %c: f32):
      %e = math.exp %a : f32
      linalg.yield %a, %e : f32, f32
    }
    func.return
  }

  // Two outputs viewing one buffer a row apart: row d0 of the second is row d0 + 1 of the
  // first, so two iterations of d0 write the same element and nothing is split.
  // CHECK-LABEL: func.func private @overlapping_outputs
  // CHECK:       linalg.generic
  func.func private @overlapping_outputs(%x: memref<256x256xf32>, %y: memref<257x256xf32>) {
    %top = memref.subview %y[0, 0] [256, 256] [1, 1] : memref<257x256xf32> to memref<256x256xf32, strided<[256, 1]>>
    %bottom = memref.subview %y[1, 0] [256, 256] [1, 1] : memref<257x256xf32> to memref<256x256xf32, strided<[256, 1], offset: 256>>
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0, d1)>],
                    iterator_types = ["parallel", "parallel"]}
        ins(%x : memref<256x256xf32>) outs(%top, %bottom : memref<256x256xf32, strided<[256, 1]>>, memref<256x256xf32, strided<[256, 1], offset: 256>>) {
    ^bb0(%a: f32, %b: f32, %c: f32):
      linalg.yield %a, %a : f32, f32
    }
    func.return
  }

  // Too little work (64 iterations) to wake the thread pool.
  // CHECK-LABEL: func.func private @preserve_small
  // CHECK:       linalg.generic
  func.func private @preserve_small(%x: memref<8x8xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]}
        outs(%x : memref<8x8xf32>) {
    ^bb0(%b: f32):
      %z = arith.constant 0.0 : f32
      linalg.yield %z : f32
    }
    func.return
  }

  // @main runs kernels; only kernels (private functions) are split.
  // CHECK-LABEL: func.func @main
  // CHECK:       linalg.generic
  func.func @main(%x: memref<256x256xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]}
        outs(%x : memref<256x256xf32>) {
    ^bb0(%b: f32):
      %z = arith.constant 0.0 : f32
      linalg.yield %z : f32
    }
    func.return
  }
}
