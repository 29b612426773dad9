//! imagebert patch 9: the element functions of `exp` and GELU in a form the compiler vectorizes.
//!
//! Upstream calls libm per element (`expf`, and `erf` in float64 for GELU): one scalar call at a
//! time, a tenth of a CPU training step. The float32 versions here are straight-line arithmetic
//! with selects instead of branches, so the loops over a tensor's blocks become SIMD code. Float64
//! keeps libm.

use core::f32::consts::{FRAC_1_SQRT_2, LOG2_E};

/// Element functions with a vectorizable float32 implementation.
pub(crate) trait FastMath: Copy {
    /// `e^x`.
    fn fast_exp(self) -> Self;
    /// The exact (erf) GELU: `x Φ(x)`, Φ the standard normal CDF.
    fn gelu(self) -> Self;
    /// Its derivative: `Φ(x) + x φ(x)`.
    fn gelu_derivative(self) -> Self;
}

/// `1 / sqrt(2π)`.
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

impl FastMath for f64 {
    fn fast_exp(self) -> f64 {
        self.exp()
    }

    fn gelu(self) -> f64 {
        0.5 * self * (1.0 + libm::erf(self * core::f64::consts::FRAC_1_SQRT_2))
    }

    fn gelu_derivative(self) -> f64 {
        0.5 * (1.0 + libm::erf(self * core::f64::consts::FRAC_1_SQRT_2))
            + self * FRAC_1_SQRT_2PI * (-0.5 * self * self).exp()
    }
}

impl FastMath for f32 {
    #[inline(always)]
    fn fast_exp(self) -> f32 {
        exp_f32(self)
    }

    #[inline(always)]
    fn gelu(self) -> f32 {
        self * normal_cdf_f32(self, exp_f32(-0.5 * self * self))
    }

    #[inline(always)]
    fn gelu_derivative(self) -> f32 {
        let density = exp_f32(-0.5 * self * self);
        normal_cdf_f32(self, density) + self * density * FRAC_1_SQRT_2PI as f32
    }
}

/// `e^x` within 2 ulp over the whole float32 range: `x = n ln 2 + r` with `|r| <= ln 2 / 2`,
/// `e^r` by its Taylor series to degree 7 (truncation below 6e-9 relative), then scaled by `2^n`
/// in two halves so that subnormal results come out right. `e^-inf = 0`, `e^inf = inf`, NaN stays NaN.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    // ln 2 in two parts; the high part has trailing zero bits, so `n * LN2_HI` is exact.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Beyond these, e^x overflows to infinity or underflows below the smallest subnormal.
    const MAX_INPUT: f32 = 88.722_84;
    const MIN_INPUT: f32 = -103.972_08;
    // Adding 1.5 * 2^23 rounds to the nearest integer (ties to even) and leaves it in the low
    // mantissa bits, from where it is read without a float-to-int conversion.
    const ROUNDER: f32 = 12_582_912.0;
    let clamped = x.clamp(MIN_INPUT, MAX_INPUT);
    let shifted = clamped * LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let n_int = shifted.to_bits() as i32 - ROUNDER.to_bits() as i32;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    let taylor = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // n is in [-150, 128]: each half is a normal power of two.
    let half = n_int >> 1;
    let power_of_two = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let value = taylor * power_of_two(half) * power_of_two(n_int - half);
    if x < MIN_INPUT {
        0.0
    } else if x > MAX_INPUT {
        f32::INFINITY
    } else {
        value
    }
}

/// Φ(x) given `density_scaled = e^(-x²/2)`: `½ erfc(|x|/√2)` for negative x and `1 - ½ erfc(|x|/√2)`
/// otherwise, erfc by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7; PyTorch's
/// vectorized erf uses the same formula), so negative tails keep their relative precision
/// better than `½ (1 + erf(x/√2))` does.
#[inline(always)]
fn normal_cdf_f32(x: f32, density_scaled: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_8;
    const A4: f32 = -1.453_152;
    const A5: f32 = 1.061_405_4;
    let z = x.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let half_erfc = 0.5 * t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5)))) * density_scaled;
    if x < 0.0 { half_erfc } else { 1.0 - half_erfc }
}
