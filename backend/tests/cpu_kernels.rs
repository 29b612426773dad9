//! The CPU backend's patched kernels (vendor/burn-ndarray, vendor/README.md): the one-pass GELU
//! and its gradient, the vectorized float32 `exp` and GELU against float64, reductions along
//! any axis (split by lanes over the threads when large), dropout's Bernoulli masks drawn in
//! parallel blocks, matmul reading transposed and permuted operands in place, and the exact
//! reciprocal, and reading a tensor's values out in row-major order whatever its layout and
//! sharing. On the CUDA build these run Burn's own kernels, so the checks hold there too.

use backend::{Compute, Train};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};

const POINTS: [f32; 9] = [-6.0, -3.0, -1.5, -0.5, 0.0, 0.3, 1.0, 2.5, 7.0];

fn values<const D: usize, B: Backend>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn gelu_is_the_erf_gelu_and_its_gradient_matches_finite_differences() {
    let device = Default::default();
    let x = Tensor::<Compute, 1>::from_data(TensorData::from(POINTS), &device);
    // x·Φ(x) (Φ the standard normal CDF) from PyTorch's float64 `gelu`.
    let expected: [f64; 9] = [
        -5.9195259e-9,
        -4.0496941e-3,
        -1.0021080e-1,
        -1.5426877e-1,
        0.0,
        1.8537343e-1,
        8.4134475e-1,
        2.4844758,
        7.0,
    ];
    for (got, want) in values(gelu(x)).iter().zip(expected) {
        assert!(
            (f64::from(*got) - want).abs() < 1e-5,
            "gelu: {got} vs {want}"
        );
    }

    let x = Tensor::<Train, 1>::from_data(TensorData::from(POINTS), &device).require_grad();
    let grads = gelu(x.clone()).sum().backward();
    let analytic = values(x.grad(&grads).unwrap());
    let h = 1e-2f32;
    let at = |shift: f32| {
        let shifted: Vec<f32> = POINTS.iter().map(|p| p + shift).collect();
        values(gelu(Tensor::<Compute, 1>::from_data(
            TensorData::from(shifted.as_slice()),
            &device,
        )))
    };
    let (up, down) = (at(h), at(-h));
    for i in 0..POINTS.len() {
        let numeric = (up[i] - down[i]) / (2.0 * h);
        assert!(
            (analytic[i] - numeric).abs() < 1e-3,
            "gelu'({}) = {} but finite differences give {numeric}",
            POINTS[i],
            analytic[i]
        );
    }
}

#[test]
fn bernoulli_masks_keep_the_rate_and_depend_only_on_the_seed() {
    let device = Default::default();
    // Several blocks of the parallel generator (65,536 elements each), and a ragged last one.
    let shape = [7, 100_003];
    let draw = |seed: u64, keep: f64| {
        Compute::seed(&device, seed);
        values(Tensor::<Compute, 2>::random(
            shape,
            Distribution::Bernoulli(keep),
            &device,
        ))
    };
    let mask = draw(5, 0.9);
    assert!(mask.iter().all(|&v| v == 0.0 || v == 1.0));
    let rate = mask.iter().sum::<f32>() / mask.len() as f32;
    assert!((rate - 0.9).abs() < 0.002, "kept {rate}, not 0.9");
    // No two blocks are the same stream.
    let block = 1 << 16;
    assert_ne!(mask[..block], mask[block..2 * block]);
    assert_eq!(draw(5, 0.9), mask, "the same seed gave another mask");
    assert_ne!(draw(6, 0.9), mask, "another seed gave the same mask");
    assert!(draw(5, 0.0).iter().all(|&v| v == 0.0));
    assert!(draw(5, 1.0).iter().all(|&v| v == 1.0));
}

/// `a · b` in float64 for row-major `[batch, m, k]` and `[batch, k, n]` values.
fn reference_matmul(a: &[f32], b: &[f32], batch: usize, m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; batch * m * n];
    for p in 0..batch {
        for i in 0..m {
            for j in 0..n {
                out[(p * m + i) * n + j] = (0..k)
                    .map(|t| f64::from(a[(p * m + i) * k + t]) * f64::from(b[(p * k + t) * n + j]))
                    .sum();
            }
        }
    }
    out
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: element count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(*g) - w).abs() < 1e-4 * (1.0 + w.abs()),
            "{what}: element {i} is {g}, float64 gives {w}"
        );
    }
}

/// The row-major `[rows, cols]` matrix `v` as a tensor whose memory holds its transpose (the
/// layout a backward pass hands matmul).
fn stored_transposed(v: &[f32], rows: usize, cols: usize) -> Tensor<Compute, 2> {
    let device = Default::default();
    let matrix = |data: Vec<f32>, shape: [usize; 2]| {
        Tensor::<Compute, 2>::from_data(TensorData::new(data, shape), &device)
    };
    matrix(
        values(matrix(v.to_vec(), [rows, cols]).transpose()),
        [cols, rows],
    )
    .transpose()
}

#[test]
fn matmul_reads_transposed_and_permuted_operands_correctly() {
    let device = Default::default();
    let (batch, heads, m, k, n) = (2, 3, 5, 7, 4);
    let ramp = |len: usize, step: f32| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * step)
            .collect()
    };
    let a = ramp(batch * heads * m * k, 0.013);
    let b = ramp(batch * heads * k * n, 0.029);
    let want = reference_matmul(&a, &b, batch * heads, m, k, n);
    let tensor = |v: &[f32], shape: [usize; 4]| {
        Tensor::<Compute, 4>::from_data(TensorData::new(v.to_vec(), shape), &device)
    };
    let (a4, b4) = (
        tensor(&a, [batch, heads, m, k]),
        tensor(&b, [batch, heads, k, n]),
    );

    // Contiguous operands.
    assert_close(&values(a4.clone().matmul(b4.clone())), &want, "contiguous");

    // The same matrices stored transposed, as the backward pass hands them over.
    let a_stored_t = values(a4.clone().swap_dims(2, 3));
    let b_stored_t = values(b4.clone().swap_dims(2, 3));
    let a_t = tensor(&a_stored_t, [batch, heads, k, m]).swap_dims(2, 3);
    let b_t = tensor(&b_stored_t, [batch, heads, n, k]).swap_dims(2, 3);
    assert_close(&values(a_t.matmul(b_t)), &want, "transposed operands");

    // Heads stored before the batch: batch dimensions that cannot merge into one stride.
    let a_heads_first = values(a4.clone().swap_dims(0, 1));
    let a_p = tensor(&a_heads_first, [heads, batch, m, k]).swap_dims(0, 1);
    assert_close(&values(a_p.matmul(b4.clone())), &want, "permuted batch");

    // 2-d: a transposed weight, as Linear's backward pass uses it.
    let w = ramp(k * n, 0.021);
    let w_t = stored_transposed(&w, k, n);
    let rows = Tensor::<Compute, 2>::from_data(
        TensorData::new(a.clone(), [batch * heads * m, k]),
        &device,
    );
    let want_2d = reference_matmul(&a, &w, 1, batch * heads * m, k, n);
    assert_close(&values(rows.matmul(w_t)), &want_2d, "transposed 2-d weight");
}

#[test]
fn large_elementwise_operations_split_across_threads_match_one_element_at_a_time() {
    let device = Default::default();
    // Above the parallel threshold (32,768) and not a multiple of the 1,024-element block.
    let len = 100_003;
    let xs: Vec<f32> = (0..len)
        .map(|i| ((i % 997) as f32 - 498.0) / 97.0)
        .collect();
    let ys: Vec<f32> = (0..len).map(|i| ((i % 389) as f32 + 1.0) / 53.0).collect();
    let x = || Tensor::<Compute, 1>::from_data(TensorData::new(xs.clone(), [len]), &device);
    let y = || Tensor::<Compute, 1>::from_data(TensorData::new(ys.clone(), [len]), &device);
    let check_n = |got: Vec<f32>, n: usize, want: &dyn Fn(usize) -> f32, what: &str| {
        assert_eq!(got.len(), n, "{what}: length");
        for (i, g) in got.iter().enumerate() {
            let w = want(i);
            assert!(
                (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
                "{what}: element {i} is {g}, expected {w}"
            );
        }
    };
    let check =
        |got: Vec<f32>, want: &dyn Fn(usize) -> f32, what: &str| check_n(got, len, want, what);
    // Each operation twice: on a buffer it owns (computed in place) and on one still shared
    // with another tensor (written to a new buffer, the shared one left unchanged).
    for shared in [false, true] {
        let keep = x();
        let input = if shared { keep.clone() } else { x() };
        check(values(input.clone().exp()), &|i| xs[i].exp(), "exp");
        check(values(y().sqrt()), &|i| ys[i].sqrt(), "sqrt");
        check(values(y().log()), &|i| ys[i].ln(), "log");
        check(
            values(input.clone().mul_scalar(0.5)),
            &|i| xs[i] * 0.5,
            "mul_scalar",
        );
        check(values(input.clone().abs()), &|i| xs[i].abs(), "abs");
        check(values(input.clone().add(y())), &|i| xs[i] + ys[i], "add");
        check(values(input.clone().mul(y())), &|i| xs[i] * ys[i], "mul");
        check(values(input.div(y())), &|i| xs[i] / ys[i], "div");
        check(values(keep), &|i| xs[i], "the shared input, unchanged");
    }

    // A reversed view (negative strides) of a shared buffer.
    let keep = x();
    check(
        values(keep.clone().flip([0]).exp()),
        &|i| xs[len - 1 - i].exp(),
        "exp of a reversed, shared tensor",
    );

    // Operands in different layouts, and a row broadcast over a matrix (a bias).
    let (rows, cols) = (311, 307);
    let matrix = |v: &[f32]| {
        Tensor::<Compute, 2>::from_data(
            TensorData::new(v[..rows * cols].to_vec(), [rows, cols]),
            &device,
        )
    };
    let transposed = Tensor::<Compute, 2>::from_data(
        TensorData::new(ys[..rows * cols].to_vec(), [cols, rows]),
        &device,
    )
    .transpose();
    let at = |i: usize| (i / cols, i % cols);
    check_n(
        values(matrix(&xs).add(transposed.clone())),
        rows * cols,
        &|i| xs[i] + ys[at(i).1 * rows + at(i).0],
        "add, one operand transposed",
    );
    check_n(
        values(matrix(&xs).div(transposed)),
        rows * cols,
        &|i| xs[i] / ys[at(i).1 * rows + at(i).0],
        "div, one operand transposed",
    );
    let bias =
        Tensor::<Compute, 2>::from_data(TensorData::new(ys[..cols].to_vec(), [1, cols]), &device);
    check_n(
        values(matrix(&xs).sub(bias.clone())),
        rows * cols,
        &|i| xs[i] - ys[at(i).1],
        "sub, broadcast row",
    );
    check_n(
        values(bias.mul(matrix(&xs))),
        rows * cols,
        &|i| ys[at(i).1] * xs[i],
        "mul, broadcast row first",
    );
}

#[test]
fn matmul_matches_float64_over_edge_shapes_and_layouts() {
    let device = Default::default();
    let sizes = [1usize, 2, 7, 33, 130];
    let mut seed = 17u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    for &m in &sizes {
        for &k in &sizes {
            for &n in &sizes {
                let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
                let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
                let want = reference_matmul(&a, &b, 1, m, k, n);
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    let operand = |v: &[f32], rows: usize, cols: usize, t: bool| {
                        if t {
                            stored_transposed(v, rows, cols)
                        } else {
                            Tensor::<Compute, 2>::from_data(
                                TensorData::new(v.to_vec(), [rows, cols]),
                                &device,
                            )
                        }
                    };
                    let got = values(operand(&a, m, k, ta).matmul(operand(&b, k, n, tb)));
                    assert_close(&got, &want, &format!("{m}x{k}x{n} transposed {ta}/{tb}"));
                }
                // A row broadcast over a batch of 3 (as `expand` leaves it: stride 0).
                let lhs =
                    Tensor::<Compute, 2>::from_data(TensorData::new(a.clone(), [m, k]), &device)
                        .unsqueeze::<3>()
                        .expand([3, m, k]);
                let rhs =
                    Tensor::<Compute, 2>::from_data(TensorData::new(b.clone(), [k, n]), &device)
                        .unsqueeze::<3>();
                let got = values(lhs.matmul(rhs));
                let want3: Vec<f64> = want.iter().cycle().take(3 * m * n).copied().collect();
                assert_close(&got, &want3, &format!("{m}x{k}x{n} expanded batch"));
                // Operands expanded inside the matrix (strides 0), as the gradient of a mean is:
                // a row repeated m times times a column repeated n times.
                let row = Tensor::<Compute, 2>::from_data(
                    TensorData::new(a[..k].to_vec(), [1, k]),
                    &device,
                )
                .expand([m, k]);
                let col = Tensor::<Compute, 2>::from_data(
                    TensorData::new(b[..k].to_vec(), [k, 1]),
                    &device,
                )
                .expand([k, n]);
                let dot: f64 = (0..k).map(|t| f64::from(a[t]) * f64::from(b[t])).sum();
                assert_close(
                    &values(row.clone().matmul(col)),
                    &vec![dot; m * n],
                    &format!("{m}x{k}x{n} expanded rows and columns"),
                );
                let scalar =
                    Tensor::<Compute, 2>::from_data(TensorData::new(vec![a[0]], [1, 1]), &device)
                        .expand([m, k]);
                let rhs =
                    Tensor::<Compute, 2>::from_data(TensorData::new(b.clone(), [k, n]), &device);
                let want_scalar: Vec<f64> = (0..m * n)
                    .map(|i| {
                        (0..k)
                            .map(|t| f64::from(a[0]) * f64::from(b[t * n + i % n]))
                            .sum()
                    })
                    .collect();
                assert_close(
                    &values(scalar.matmul(rhs)),
                    &want_scalar,
                    &format!("{m}x{k}x{n} expanded scalar"),
                );
            }
        }
    }
}

/// `x Φ(x)` and its derivative in float64, Φ through libm's `erf`.
fn gelu_f64(x: f64) -> (f64, f64) {
    let cdf = 0.5 * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2));
    let density = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (x * cdf, cdf + x * density)
}

#[test]
fn exp_and_gelu_match_float64_over_the_float32_range() {
    let device = Default::default();
    // exp: every result from the smallest subnormal to the largest float, dense enough to cross
    // each rounding case of the range reduction; then the special inputs.
    let count = 400_000;
    let mut xs: Vec<f32> = (0..count)
        .map(|i| -104.0 + 192.7 * i as f32 / (count - 1) as f32)
        .collect();
    xs.extend([f32::NEG_INFINITY, -200.0, -0.0, 1e-30, 100.0, f32::INFINITY]);
    let got = values(
        Tensor::<Compute, 1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &device).exp(),
    );
    for (&x, &g) in xs.iter().zip(&got) {
        let want = f64::from(x).exp();
        let error = (f64::from(g) - want).abs();
        // Two ulp for normal results; subnormals have a fixed spacing of 2^-149.
        let bound = (2.0 * f64::from(f32::EPSILON) * want).max(2f64.powi(-149));
        assert!(
            error <= bound || (want > f64::from(f32::MAX) && g == f32::INFINITY),
            "exp({x}) = {g}, expected {want}"
        );
    }
    let nan = values(
        Tensor::<Compute, 1>::from_data(TensorData::new(vec![f32::NAN; 40_000], [40_000]), &device)
            .exp(),
    );
    assert!(nan.iter().all(|v| v.is_nan()), "exp(NaN) must stay NaN");

    // GELU and its gradient on [-10, 10]. Φ comes from a rational erfc with absolute error
    // below 1.5e-7, so the error may grow with |x|; float32 arithmetic adds a few ulp.
    let xs: Vec<f32> = (0..count)
        .map(|i| -10.0 + 20.0 * i as f32 / (count - 1) as f32)
        .collect();
    let x =
        Tensor::<Train, 1>::from_data(TensorData::new(xs.clone(), [count]), &device).require_grad();
    let y = gelu(x.clone());
    let forward = values(y.clone());
    let gradient = values(x.grad(&y.sum().backward()).unwrap());
    let (mut worst_value, mut worst_slope) = (0f64, 0f64);
    for (i, &x) in xs.iter().enumerate() {
        let (value, slope) = gelu_f64(f64::from(x));
        let bound = |exact: f64| {
            1.5e-7 * (1.0 + f64::from(x.abs())) + 4.0 * f64::from(f32::EPSILON) * exact.abs()
        };
        let (value_error, slope_error) = (
            (f64::from(forward[i]) - value).abs(),
            (f64::from(gradient[i]) - slope).abs(),
        );
        worst_value = worst_value.max(value_error / bound(value));
        worst_slope = worst_slope.max(slope_error / bound(slope));
        assert!(
            value_error <= bound(value),
            "gelu({x}) = {}, expected {value}",
            forward[i]
        );
        assert!(
            slope_error <= bound(slope),
            "gelu'({x}) = {}, expected {slope}",
            gradient[i]
        );
    }
    eprintln!("worst error / bound: gelu {worst_value:.3}, gelu' {worst_slope:.3}");
}

#[test]
fn large_reductions_along_any_axis_match_float64() {
    let device = Default::default();
    // Above the parallel threshold; lanes of odd lengths.
    let shape = [7, 53, 301];
    let len: usize = shape.iter().product();
    let xs: Vec<f32> = (0..len)
        .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 101.0)
        .collect();
    let at = |i: usize, j: usize, k: usize| xs[(i * shape[1] + j) * shape[2] + k];
    let tensor = Tensor::<Compute, 3>::from_data(TensorData::new(xs.clone(), shape), &device);
    // Along each axis of the stored tensor, and along the last axis of a permuted view (whose
    // smallest stride is then another axis).
    let views = [
        (tensor.clone(), [0, 1, 2]),
        (tensor.clone().permute([2, 0, 1]), [2, 0, 1]),
    ];
    for (view, order) in views {
        for dim in 0..3 {
            let axis = order[dim];
            let mut out_shape = view.dims();
            out_shape[dim] = 1;
            let (sum, mean, max) = (
                view.clone().sum_dim(dim),
                view.clone().mean_dim(dim),
                view.clone().max_dim(dim),
            );
            assert_eq!(sum.dims(), out_shape, "sum_dim({dim}) keeps the axis");
            let (sum, mean, max) = (values(sum), values(mean), values(max));
            // Output element o of the view: its coordinates in the stored tensor with `axis`
            // free, visited in the view's order.
            let other: Vec<usize> = order.iter().copied().filter(|&a| a != axis).collect();
            let mut o = 0;
            for p in 0..shape[other[0]] {
                for q in 0..shape[other[1]] {
                    let lane: Vec<f32> = (0..shape[axis])
                        .map(|r| {
                            let mut index = [0; 3];
                            index[other[0]] = p;
                            index[other[1]] = q;
                            index[axis] = r;
                            at(index[0], index[1], index[2])
                        })
                        .collect();
                    let exact: f64 = lane.iter().map(|&v| f64::from(v)).sum();
                    let scale: f64 = lane.iter().map(|&v| f64::from(v.abs())).sum();
                    let what = format!("order {order:?}, dim {dim}, lane {o}");
                    assert!(
                        (f64::from(sum[o]) - exact).abs() <= 1e-6 * scale,
                        "sum {what}: {} vs {exact}",
                        sum[o]
                    );
                    let count = lane.len() as f64;
                    assert!(
                        (f64::from(mean[o]) - exact / count).abs() <= 1e-6 * scale / count,
                        "mean {what}: {} vs {}",
                        mean[o],
                        exact / count
                    );
                    let largest = lane.iter().copied().fold(f32::MIN, f32::max);
                    assert_eq!(max[o], largest, "max {what}");
                    o += 1;
                }
            }
        }
    }
}

#[test]
fn reciprocal_is_exact_wherever_the_buffer_starts() {
    // Upstream's SIMD reciprocal took the CPU's 14-bit approximation for aligned vectors and
    // exact division for the unaligned head, so its results depended on the buffer's address.
    let device = Default::default();
    let data: Vec<f32> = (0..1000).map(|i| 0.37 + i as f32 * 0.013).collect();
    let whole = Tensor::<Compute, 1>::from_data(TensorData::new(data.clone(), [1000]), &device);
    for offset in 0..16 {
        let part = whole.clone().narrow(0, offset, 900);
        for (i, got) in values(part.recip()).iter().enumerate() {
            let want = 1.0 / data[offset + i];
            assert_eq!(*got, want, "1/{} at offset {offset}", data[offset + i]);
        }
    }
    // log_sigmoid's gradient, σ(-x), goes through it (the fine-tuning loss): float64's, on
    // freshly allocated buffers each time.
    for round in 0..8 {
        let x = Tensor::<Train, 1>::from_data(TensorData::new(data.clone(), [1000]), &device)
            .sub_scalar(6.0)
            .require_grad();
        let gradients = burn::tensor::activation::log_sigmoid(x.clone())
            .sum()
            .backward();
        let got = values(x.grad(&gradients).unwrap());
        for (g, v) in got.iter().zip(&data) {
            let x = f64::from(*v) - 6.0;
            let want = 1.0 / (1.0 + x.exp());
            assert!(
                (f64::from(*g) - want).abs() < 1e-6,
                "round {round}: dlog σ/dx at {x}: {g} vs {want}"
            );
        }
    }
}

#[test]
fn values_read_out_in_row_major_order_from_shared_and_strided_tensors() {
    let device = Default::default();
    let (d0, d1, d2) = (3, 4, 5);
    let source: Vec<f32> = (0..d0 * d1 * d2).map(|i| i as f32).collect();
    let tensor =
        Tensor::<Compute, 3>::from_data(TensorData::new(source.clone(), [d0, d1, d2]), &device);
    // Contiguous, owned and shared (a clone keeps the buffer alive): the same values.
    assert_eq!(values(tensor.clone()), source);
    let shared = tensor.clone();
    assert_eq!(values(shared), source);
    // Strided views: a permutation and a slice, read in their own row-major order.
    let permuted = tensor.clone().permute([2, 0, 1]);
    let expected: Vec<f32> = (0..d2)
        .flat_map(|k| {
            (0..d0).flat_map(move |i| (0..d1).map(move |j| (i * d1 * d2 + j * d2 + k) as f32))
        })
        .collect();
    assert_eq!(values(permuted), expected);
    let sliced = tensor.slice([0..d0, 1..3, 2..5]);
    let expected: Vec<f32> = (0..d0)
        .flat_map(|i| {
            (1..3).flat_map(move |j| (2..5).map(move |k| (i * d1 * d2 + j * d2 + k) as f32))
        })
        .collect();
    assert_eq!(values(sliced), expected);
}
