use crate::{
    NdArray, NdArrayTensor, SharedArray,
    element::{FloatNdArrayElement, IntNdArrayElement, QuantElement},
    execute_with_float_dtype, execute_with_numeric_dtype,
    ops::NdArrayMathOps,
};
use burn_backend::{ElementConversion, TensorMetadata, ops::ActivationOps, tensor::FloatTensor};
use crate::fast_math::FastMath;
use crate::parallel::map_elements;

// imagebert patch: GELU and its gradient as one pass each over the tensor, on the rayon threads
// (upstream: five single-threaded passes forward; eleven backward, with the derivative of the
// tanh approximation rather than of the erf GELU the forward computes). Patch 9: the element
// functions vectorize (`fast_math`).

/// `grad × gelu'(x)`, in place of `grad` when it is not shared.
fn scale_by_derivative<E: FastMath + Send + Sync>(
    x: SharedArray<E>,
    grad: SharedArray<E>,
) -> SharedArray<E>
where
    E: core::ops::Mul<Output = E>,
{
    let mut owned = grad.into_owned();
    let zip = ndarray::Zip::from(&mut owned).and(&x);
    let update = |g: &mut E, &x: &E| *g = *g * x.gelu_derivative();
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
        execute_with_float_dtype!(tensor, FloatElem, |array: SharedArray<FloatElem>| {
            map_elements(array, |a: FloatElem| a.gelu())
        })
    }

    fn gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        assert_eq!(x.shape(), grad.shape(), "gelu_backward: x and grad differ in shape");
        execute_with_float_dtype!((x, grad), scale_by_derivative)
    }
}
