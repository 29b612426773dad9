//! `on_compute_threads`: the work runs on a worker of the compute pool, and the CPU backend's
//! parallel operations issued from there (the issuing thread taking a share) give the results
//! they give from the main thread.

use backend::{Compute, on_compute_threads};
use burn::tensor::{Tensor, TensorData};

#[test]
fn work_runs_on_a_compute_worker_and_computes_the_same() {
    let on_worker = on_compute_threads(|| {
        (
            rayon::current_thread_index().is_some(),
            std::thread::current().name().map(str::to_owned),
        )
    });
    assert!(on_worker.0, "the work ran outside the pool");
    assert!(
        on_worker
            .1
            .as_deref()
            .is_some_and(|name| name.starts_with("compute-")),
        "thread {:?}",
        on_worker.1
    );

    // Large enough for matmul and the element-wise kernels to split over threads.
    let step = || {
        let device = Default::default();
        let values: Vec<f32> = (0..300 * 400)
            .map(|i| (i % 113) as f32 / 113.0 - 0.5)
            .collect();
        let a =
            Tensor::<Compute, 2>::from_data(TensorData::new(values.clone(), [300, 400]), &device);
        let b = a.clone().transpose();
        let product = a.matmul(b).exp().sum_dim(1);
        product.into_data().to_vec::<f32>().unwrap()
    };
    assert_eq!(on_compute_threads(step), step());
}
