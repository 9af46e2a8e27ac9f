// RUN: dlc opt %s -p fuse-parallel-siblings | filecheck %s

// Consecutive generics of a kernel that write one buffer, each iteration of their channel
// loop inside one channel's slice, become one dlc.parallel loop over the channels; each
// generic's loop nest sits inside it with its channel loop replaced by the shared index.

builtin.module {
  // A bias fill, then an accumulation, then a border box through a view: one loop over the
  // 64 channels of y; inside it, three nests over the batch (one iteration) and the positions.
  // CHECK-LABEL: func.func private @bias_then_accumulate_then_box
  // CHECK:         %[[C:.*]] = arith.constant 64 : index
  // CHECK:         scf.for %[[CH:.*]] = %{{.*}} to %[[C]] step %{{.*}} {
  // CHECK:           scf.for %[[N:.*]] = %{{.*}} to %{{.*}} step %{{.*}} {
  // CHECK-NEXT:        scf.for %[[H:.*]] = %{{.*}} to %{{.*}} step %{{.*}} {
  // CHECK-NEXT:          scf.for %[[W:.*]] = %{{.*}} to %{{.*}} step %{{.*}} {
  // CHECK-NEXT:            %{{.*}} = memref.load %{{.*}}[%[[CH]]] : memref<64xf32>
  // CHECK-NEXT:            memref.store %{{.*}}, %{{.*}}[%[[N]], %[[CH]], %[[H]], %[[W]]] : memref<1x64x32x32xf32>
  // CHECK:           scf.for %[[N2:.*]] = %{{.*}} to %{{.*}} step %{{.*}} {
  // CHECK-NEXT:        scf.for %[[H2:.*]] = %{{.*}} to %{{.*}} step %{{.*}} {
  // CHECK-NEXT:          scf.for %[[W2:.*]] = %{{.*}} to %{{.*}} step %{{.*}} {
  // CHECK-NEXT:            %{{.*}} = memref.load %{{.*}}[%[[N2]], %[[CH]], %[[H2]], %[[W2]]] : memref<1x64x32x32xf32>
  // CHECK:                 memref.store %{{.*}}, %{{.*}}[%[[N2]], %[[CH]], %[[H2]], %[[W2]]] : memref<1x64x32x32xf32>
  // CHECK:                 memref.store %{{.*}}, %{{.*}}[%{{.*}}, %[[CH]], %{{.*}}] : memref<1x64x32xf32, strided<[65536, 1024, 1]>>
  // CHECK:         } {dlc.parallel}
  // CHECK-NOT:     linalg.generic
  // CHECK:         func.return
  func.func private @bias_then_accumulate_then_box(%x: memref<1x64x32x32xf32>, %b: memref<64xf32>, %y: memref<1x64x32x32xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d1)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>],
                    iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
        ins(%b : memref<64xf32>) outs(%y : memref<1x64x32x32xf32>) {
    ^bb0(%v: f32, %o: f32):
      linalg.yield %v : f32
    }
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>],
                    iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
        ins(%x : memref<1x64x32x32xf32>) outs(%y : memref<1x64x32x32xf32>) {
    ^bb0(%a: f32, %o: f32):
      %s = arith.addf %a, %o : f32
      linalg.yield %s : f32
    }
    // The first row of each channel, through a view of y (offset 0, row stride 1024).
    %row = memref.reinterpret_cast %y to offset: [0], sizes: [1, 64, 32], strides: [65536, 1024, 1] : memref<1x64x32x32xf32> to memref<1x64x32xf32, strided<[65536, 1024, 1]>>
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>],
                    iterator_types = ["parallel", "parallel", "parallel"]}
        outs(%row : memref<1x64x32xf32, strided<[65536, 1024, 1]>>) {
    ^bb0(%o: f32):
      %z = arith.constant 0.0 : f32
      linalg.yield %z : f32
    }
    func.return
  }

  // The second generic reads y transposed (channel and row swapped): iteration c reads
  // what other iterations write, so nothing is fused.
  // CHECK-LABEL: func.func private @reads_other_channels
  // CHECK-NOT:     dlc.parallel
  // CHECK:         linalg.generic
  // CHECK:         linalg.generic
  func.func private @reads_other_channels(%b: memref<32xf32>, %y: memref<1x32x32x32xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d1)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>],
                    iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
        ins(%b : memref<32xf32>) outs(%y : memref<1x32x32x32xf32>) {
    ^bb0(%v: f32, %o: f32):
      linalg.yield %v : f32
    }
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d2, d1, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>],
                    iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
        ins(%y : memref<1x32x32x32xf32>) outs(%y : memref<1x32x32x32xf32>) {
    ^bb0(%a: f32, %o: f32):
      %s = arith.addf %a, %o : f32
      linalg.yield %s : f32
    }
    func.return
  }

  // A depthwise conv's padded planes (one row of 1042 floats per channel: 16 zeros, the
  // channel's 1024 inputs, 2 zeros), then its taps reading them into y: the group writes two
  // buffers, both split on their 64 channels, and each iteration keeps to its channel's
  // slice of both, so fills, copy and taps share one loop over the channels.
  // CHECK-LABEL: func.func private @planes_then_taps
  // CHECK:         scf.for %[[CH:.*]] = %{{.*}} to %{{.*}} step %{{.*}} {
  // CHECK:           memref.store %{{.*}}, %{{.*}}[%[[CH]], %{{.*}}] : memref<64x16xf32, strided<[1042, 1]>>
  // CHECK:           memref.store %{{.*}}, %{{.*}}[%[[CH]], %{{.*}}] : memref<64x2xf32, strided<[1042, 1], offset: 1040>>
  // CHECK:           memref.store %{{.*}}, %{{.*}}[%{{.*}}, %[[CH]], %{{.*}}] : memref<1x64x1024xf32, strided<[66688, 1042, 1], offset: 16>>
  // CHECK:           memref.load %{{.*}}[%{{.*}}, %[[CH]], %{{.*}}] : memref<1x64x1024xf32, strided<[66688, 1042, 1], offset: 15>>
  // CHECK:           memref.load %{{.*}}[%{{.*}}, %[[CH]], %{{.*}}] : memref<1x64x1024xf32, strided<[66688, 1042, 1], offset: 17>>
  // CHECK:           memref.store %{{.*}}, %{{.*}}[%{{.*}}, %[[CH]], %{{.*}}] : memref<1x64x1024xf32>
  // CHECK:         } {dlc.parallel}
  // CHECK-NOT:     linalg.generic
  // CHECK:         func.return
  func.func private @planes_then_taps(%x: memref<1x64x1024xf32>, %planes: memref<64x1042xf32>, %y: memref<1x64x1024xf32>) {
    %front = memref.reinterpret_cast %planes to offset: [0], sizes: [64, 16], strides: [1042, 1] : memref<64x1042xf32> to memref<64x16xf32, strided<[1042, 1]>>
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]}
        outs(%front : memref<64x16xf32, strided<[1042, 1]>>) {
    ^bb0(%o: f32):
      %z = arith.constant 0.0 : f32
      linalg.yield %z : f32
    }
    %back = memref.reinterpret_cast %planes to offset: [1040], sizes: [64, 2], strides: [1042, 1] : memref<64x1042xf32> to memref<64x2xf32, strided<[1042, 1], offset: 1040>>
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]}
        outs(%back : memref<64x2xf32, strided<[1042, 1], offset: 1040>>) {
    ^bb0(%o: f32):
      %z = arith.constant 0.0 : f32
      linalg.yield %z : f32
    }
    %middle = memref.reinterpret_cast %planes to offset: [16], sizes: [1, 64, 1024], strides: [66688, 1042, 1] : memref<64x1042xf32> to memref<1x64x1024xf32, strided<[66688, 1042, 1], offset: 16>>
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>],
                    iterator_types = ["parallel", "parallel", "parallel"]}
        ins(%x : memref<1x64x1024xf32>) outs(%middle : memref<1x64x1024xf32, strided<[66688, 1042, 1], offset: 16>>) {
    ^bb0(%a: f32, %o: f32):
      linalg.yield %a : f32
    }
    %left = memref.reinterpret_cast %planes to offset: [15], sizes: [1, 64, 1024], strides: [66688, 1042, 1] : memref<64x1042xf32> to memref<1x64x1024xf32, strided<[66688, 1042, 1], offset: 15>>
    %right = memref.reinterpret_cast %planes to offset: [17], sizes: [1, 64, 1024], strides: [66688, 1042, 1] : memref<64x1042xf32> to memref<1x64x1024xf32, strided<[66688, 1042, 1], offset: 17>>
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>,
                                     affine_map<(d0, d1, d2) -> (d0, d1, d2)>],
                    iterator_types = ["parallel", "parallel", "parallel"]}
        ins(%left, %right : memref<1x64x1024xf32, strided<[66688, 1042, 1], offset: 15>>, memref<1x64x1024xf32, strided<[66688, 1042, 1], offset: 17>>)
        outs(%y : memref<1x64x1024xf32>) {
    ^bb0(%l: f32, %r: f32, %o: f32):
      %s = arith.addf %l, %r : f32
      linalg.yield %s : f32
    }
    func.return
  }

  // The taps read the planes in reverse channel order: iteration c would read what
  // iteration 63 - c writes, so only the copy joins the fill; the taps stay a generic after it.
  // CHECK-LABEL: func.func private @taps_read_other_channels
  // CHECK:         scf.for
  // CHECK:         } {dlc.parallel}
  // CHECK-NEXT:    linalg.generic
  func.func private @taps_read_other_channels(%x: memref<1x64x1024xf32>, %planes: memref<64x1042xf32>, %y: memref<1x64x1024xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]}
        outs(%planes : memref<64x1042xf32>) {
    ^bb0(%o: f32):
      %z = arith.constant 0.0 : f32
      linalg.yield %z : f32
    }
    %middle = memref.reinterpret_cast %planes to offset: [16], sizes: [1, 64, 1024], strides: [66688, 1042, 1] : memref<64x1042xf32> to memref<1x64x1024xf32, strided<[66688, 1042, 1], offset: 16>>
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>],
                    iterator_types = ["parallel", "parallel", "parallel"]}
        ins(%x : memref<1x64x1024xf32>) outs(%middle : memref<1x64x1024xf32, strided<[66688, 1042, 1], offset: 16>>) {
    ^bb0(%a: f32, %o: f32):
      linalg.yield %a : f32
    }
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (-d1 + 63, d2 + 16)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>],
                    iterator_types = ["parallel", "parallel", "parallel"]}
        ins(%planes : memref<64x1042xf32>) outs(%y : memref<1x64x1024xf32>) {
    ^bb0(%a: f32, %o: f32):
      linalg.yield %a : f32
    }
    func.return
  }
  // A mean over an NHWC map's pixels writes [1, 1, 1, C]: its only axis of more than one element
  // is its innermost. Split there, each sibling's pixel loops would run inside a channel loop,
  // reading x C floats apart; the generics stay as they are (and their loops in x's order).
  // CHECK-LABEL: func.func private @nhwc_mean
  // CHECK-NOT:     dlc.parallel
  // CHECK:         linalg.generic
  // CHECK:         linalg.generic
  // CHECK:         func.return
  func.func private @nhwc_mean(%x: memref<1x64x64x32xf32>, %y: memref<1x1x1x32xf32>) {
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
        outs(%y : memref<1x1x1x32xf32>) {
    ^bb0(%o: f32):
      %z = arith.constant 0.0 : f32
      linalg.yield %z : f32
    }
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, 0, 0, d3)>],
                    iterator_types = ["parallel", "reduction", "reduction", "parallel"]}
        ins(%x : memref<1x64x64x32xf32>) outs(%y : memref<1x1x1x32xf32>) {
    ^bb0(%a: f32, %o: f32):
      %s = arith.addf %o, %a : f32
      linalg.yield %s : f32
    }
    func.return
  }
}
