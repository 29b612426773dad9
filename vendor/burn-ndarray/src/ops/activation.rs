use crate::{
    NdArray, NdArrayTensor, SharedArray,
    element::{FloatNdArrayElement, IntNdArrayElement, QuantElement},
    execute_with_float_dtype, execute_with_numeric_dtype,
    ops::NdArrayMathOps,
};
use burn_backend::{ElementConversion, TensorMetadata, ops::ActivationOps, tensor::FloatTensor};
use libm::erf;

// imagebert patch: GELU and its gradient as one pass each over the tensor, on the rayon threads
// (upstream: five single-threaded passes forward; eleven backward, with the derivative of the
// tanh approximation rather than of the erf GELU the forward computes).

/// The exact (erf) GELU: `x Φ(x)`.
fn gelu_value(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x * core::f64::consts::FRAC_1_SQRT_2))
}

/// Its derivative: `Φ(x) + x φ(x)`.
fn gelu_derivative(x: f64) -> f64 {
    const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
    0.5 * (1.0 + erf(x * core::f64::consts::FRAC_1_SQRT_2))
        + x * FRAC_1_SQRT_2PI * (-0.5 * x * x).exp()
}

/// `f` over every element, in place when `array` is not shared.
fn map_elements<E: FloatNdArrayElement>(array: SharedArray<E>, f: fn(f64) -> f64) -> SharedArray<E> {
    let mut owned = array.into_owned();
    #[cfg(feature = "multi-threads")]
    owned.par_mapv_inplace(|a| f(a.to_f64()).elem());
    #[cfg(not(feature = "multi-threads"))]
    owned.mapv_inplace(|a| f(a.to_f64()).elem());
    owned.into_shared()
}

/// `grad × gelu'(x)`, in place of `grad` when it is not shared.
fn scale_by_derivative<E: FloatNdArrayElement>(x: SharedArray<E>, grad: SharedArray<E>) -> SharedArray<E> {
    let mut owned = grad.into_owned();
    let zip = ndarray::Zip::from(&mut owned).and(&x);
    let update = |g: &mut E, &x: &E| *g = (g.to_f64() * gelu_derivative(x.to_f64())).elem();
    #[cfg(feature = "multi-threads")]
    zip.par_for_each(update);
    #[cfg(not(feature = "multi-threads"))]
    zip.for_each(update);
    owned.into_shared()
}

impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> ActivationOps<Self>
    for NdArray<E, I, Q>
where
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    fn relu(tensor: FloatTensor<Self>) -> FloatTensor<Self> {
        execute_with_numeric_dtype!(tensor, |array| NdArrayMathOps::clamp_min(array, 0.elem()))
    }

    fn gelu(tensor: FloatTensor<Self>) -> FloatTensor<Self> {
        execute_with_float_dtype!(tensor, |array| map_elements(array, gelu_value))
    }

    fn gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        assert_eq!(x.shape(), grad.shape(), "gelu_backward: x and grad differ in shape");
        execute_with_float_dtype!((x, grad), scale_by_derivative)
    }
}
