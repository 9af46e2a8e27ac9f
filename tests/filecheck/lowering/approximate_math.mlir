// RUN: dlc opt %s -p approximate-math | filecheck %s

// f32 exp, tanh and erf become arith/math sequences with no transcendental call left;
// f64 ones and other math ops stay (libm is exact to 0.5 ulp there).

builtin.module {
  // exp: range reduction by fma, 2^n built in the exponent field, NaN passed through.
  // CHECK-LABEL: func.func @exp_f32
  // CHECK-SAME:  (%[[X:.*]]: f32)
  // CHECK-NOT:   math.exp
  // CHECK:       %[[NAN:.*]] = arith.cmpf uno, %[[X]], %[[X]] : f32
  // CHECK:       math.roundeven
  // CHECK:       math.fma
  // CHECK:       arith.fptosi {{.*}} : f32 to i32
  // CHECK:       arith.shli
  // CHECK:       arith.bitcast {{.*}} : i32 to f32
  // CHECK:       %[[E:.*]] = arith.select %[[NAN]], %[[X]], %{{.*}} : f32
  // CHECK-NOT:   math.exp
  // CHECK:       func.return %[[E]] : f32
  func.func @exp_f32(%x: f32) -> f32 {
    %e = math.exp %x : f32
    func.return %e : f32
  }

  // tanh and erf: two branch-free formulas, a select, and the sign of x.
  // CHECK-LABEL: func.func @tanh_erf_f32
  // CHECK-SAME:  (%[[X:.*]]: f32)
  // CHECK-NOT:   math.tanh
  // CHECK:       arith.select
  // CHECK:       %[[T:.*]] = math.copysign %{{.*}}, %[[X]] : f32
  // CHECK-NOT:   math.erf
  // CHECK:       %[[R:.*]] = math.copysign %{{.*}}, %[[X]] : f32
  // CHECK-NOT:   math.tanh
  // CHECK-NOT:   math.erf
  // CHECK:       func.return %[[T]], %[[R]] : f32, f32
  func.func @tanh_erf_f32(%x: f32) -> (f32, f32) {
    %t = math.tanh %x : f32
    %r = math.erf %x : f32
    func.return %t, %r : f32, f32
  }

  // CHECK-LABEL: func.func @preserve_f64
  // CHECK-NEXT:  math.exp %{{.*}} : f64
  // CHECK-NEXT:  math.tanh %{{.*}} : f64
  // CHECK-NEXT:  math.erf %{{.*}} : f64
  // CHECK-NEXT:  func.return
  func.func @preserve_f64(%x: f64) -> (f64, f64, f64) {
    %e = math.exp %x : f64
    %t = math.tanh %x : f64
    %r = math.erf %x : f64
    func.return %e, %t, %r : f64, f64, f64
  }

  // Other transcendental ops are not this pass's business.
  // CHECK-LABEL: func.func @preserve_other_math
  // CHECK-NEXT:  math.log %{{.*}} : f32
  // CHECK-NEXT:  math.exp2 %{{.*}} : f32
  // CHECK-NEXT:  func.return
  func.func @preserve_other_math(%x: f32) -> (f32, f32) {
    %l = math.log %x : f32
    %c = math.exp2 %x : f32
    func.return %l, %c : f32, f32
  }
}
