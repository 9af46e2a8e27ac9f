// RUN: dlc opt %s -p collapse-parallel-dims | filecheck %s

// Loop dimensions that every operand walks contiguously merge: an in-place ReLU6 on a
// 1x4x6x6 buffer with scalar bounds becomes one loop of 144 over one view (used as both
// input and output, so it stays in place); a per-channel bias keeps its channel loop and
// merges the two spatial ones; a transposed operand or a strided window merges nothing it
// does not walk contiguously; a body reading linalg.index is left alone.

builtin.module {
  // CHECK-LABEL: func.func private @in_place_clip
  // CHECK:       %[[V:.*]] = memref.reinterpret_cast %{{.*}} to offset: [0], sizes: [144], strides: [1]
  // CHECK:       linalg.generic {indexing_maps = [affine_map<(d0) -> ()>, affine_map<(d0) -> ()>, affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]}
  // CHECK-SAME:    ins(%{{.*}}, %{{.*}}, %[[V]] : memref<f32>, memref<f32>, memref<144xf32, strided<[1]>>) outs(%[[V]] : memref<144xf32, strided<[1]>>)
  func.func private @in_place_clip(%lo: memref<f32>, %hi: memref<f32>, %y: memref<1x4x6x6xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> ()>, affine_map<(d0, d1, d2, d3) -> ()>,
                                     affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>],
                    iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
        ins(%lo, %hi, %y : memref<f32>, memref<f32>, memref<1x4x6x6xf32>) outs(%y : memref<1x4x6x6xf32>) {
    ^bb0(%l: f32, %h: f32, %x: f32, %o: f32):
      %a = arith.maximumf %x, %l : f32
      %b = arith.minimumf %a, %h : f32
      linalg.yield %b : f32
    }
    func.return
  }

  // CHECK-LABEL: func.func private @bias_per_channel
  // CHECK:       linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0)>, affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]}
  // CHECK-SAME:    memref<4x36xf32, strided<[36, 1]>>, memref<4xf32>) outs(%{{.*}} : memref<4x36xf32, strided<[36, 1]>>)
  func.func private @bias_per_channel(%x: memref<4x6x6xf32>, %b: memref<4xf32>, %y: memref<4x6x6xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0)>,
                                     affine_map<(d0, d1, d2) -> (d0, d1, d2)>],
                    iterator_types = ["parallel", "parallel", "parallel"]}
        ins(%x, %b : memref<4x6x6xf32>, memref<4xf32>) outs(%y : memref<4x6x6xf32>) {
    ^bb0(%v: f32, %c: f32, %o: f32):
      %s = arith.addf %v, %c : f32
      linalg.yield %s : f32
    }
    func.return
  }

  // A window of a wider buffer: its rows are 8 apart, not 6, so only its batch of one merges.
  // CHECK-LABEL: func.func private @strided_window
  // CHECK:       memref.reinterpret_cast %{{.*}} to offset: [9], sizes: [6, 6], strides: [8, 1]
  // CHECK:       iterator_types = ["parallel", "parallel"]
  // CHECK-SAME:    memref<6x6xf32, strided<[8, 1], offset: 9>>
  func.func private @strided_window(%x: memref<1x6x6xf32, strided<[64, 8, 1], offset: 9>>, %y: memref<1x6x6xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>],
                    iterator_types = ["parallel", "parallel", "parallel"]}
        ins(%x : memref<1x6x6xf32, strided<[64, 8, 1], offset: 9>>) outs(%y : memref<1x6x6xf32>) {
    ^bb0(%v: f32, %o: f32):
      linalg.yield %v : f32
    }
    func.return
  }

  // CHECK-LABEL: func.func private @preserve_transposed
  // CHECK:       affine_map<(d0, d1) -> (d1, d0)>
  // CHECK-SAME:  iterator_types = ["parallel", "parallel"]
  func.func private @preserve_transposed(%x: memref<6x6xf32>, %y: memref<6x6xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d1, d0)>, affine_map<(d0, d1) -> (d0, d1)>],
                    iterator_types = ["parallel", "parallel"]}
        ins(%x : memref<6x6xf32>) outs(%y : memref<6x6xf32>) {
    ^bb0(%v: f32, %o: f32):
      linalg.yield %v : f32
    }
    func.return
  }

  // CHECK-LABEL: func.func private @preserve_reads_its_index
  // CHECK:       iterator_types = ["parallel", "parallel"]
  func.func private @preserve_reads_its_index(%y: memref<6x6xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]}
        outs(%y : memref<6x6xf32>) {
    ^bb0(%o: f32):
      %i = linalg.index 1 : index
      %n = arith.index_cast %i : index to i32
      %f = arith.sitofp %n : i32 to f32
      linalg.yield %f : f32
    }
    func.return
  }

  // A per-channel scale read as [1, C, 1, 1] through (d0, d1, 0, 0), as squeeze-and-excitation
  // writes it: its unit dims are broadcast, so the two spatial loops still merge.
  // CHECK-LABEL: func.func private @broadcast_scale
  // CHECK-DAG:   %[[X:.*]] = memref.reinterpret_cast %{{.*}} to offset: [0], sizes: [4, 36], strides: [36, 1]
  // CHECK-DAG:   %[[S:.*]] = memref.reinterpret_cast %{{.*}} to offset: [0], sizes: [4], strides: [1]
  // CHECK:       linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0)>, affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]}
  // CHECK-SAME:    ins(%[[X]], %[[S]] :
  func.func private @broadcast_scale(%x: memref<1x4x6x6xf32>, %s: memref<1x4x1x1xf32>, %y: memref<1x4x6x6xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, 0, 0)>,
                                     affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>],
                    iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
        ins(%x, %s : memref<1x4x6x6xf32>, memref<1x4x1x1xf32>) outs(%y : memref<1x4x6x6xf32>) {
    ^bb0(%a: f32, %b: f32, %o: f32):
      %m = arith.mulf %a, %b : f32
      linalg.yield %m : f32
    }
    func.return
  }
}
