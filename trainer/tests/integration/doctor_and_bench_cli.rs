//! `trainer doctor` and `trainer bench` run as a user would, on the backend this build was
//! compiled with (the doctor's flag parsing and check are tested in the backend crate, the
//! bench's figures in `trainer::bench`).

#[test]
fn doctor_reports_a_passing_self_check_on_the_compiled_backend() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["doctor", "--size", "32"])
        .output()
        .expect("run trainer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("self-check         ok"),
        "{stdout}"
    );
    assert!(stdout.contains(backend::BACKEND_NAME), "{stdout}");
}

/// Runs `trainer bench` with tiny shapes and `extra` flags; returns the exit status, stdout and
/// stderr.
fn bench(extra: &[&str]) -> (bool, String, String) {
    let shapes = [
        "bench",
        "--models",
        "mini",
        "--train-batch",
        "2",
        "--pair-batch",
        "2",
        "--text-len",
        "5",
        "--regions",
        "3",
        "--feature-dim",
        "8",
        "--classes",
        "4",
        "--seconds",
        "0",
    ];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(shapes)
        .args(extra)
        .output()
        .expect("run trainer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether this build runs on a GPU backend (CUDA or wgpu), whose float types exclude f64.
const GPU: bool = cfg!(any(
    feature = "cuda",
    feature = "cuda-without-fusion",
    feature = "wgpu"
));

#[test]
fn bench_times_the_cold_start_of_a_step_at_the_precision_asked_for() {
    // A precision other than the default where the build has one (f64 on the CPU).
    let precision = if GPU { "f32" } else { "f64" };
    let started = std::time::Instant::now();
    // The GPU kernel flags parse on every build (the CPU backend ignores them).
    let (ok, stdout, stderr) = bench(&[
        "--skip-scoring",
        "--same-batch",
        "--warmup",
        "2",
        "--precision",
        precision,
        "--kernel-cache",
        "none",
        "--autotune",
        "minimal",
    ]);
    let wall = started.elapsed().as_secs_f64();
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("| mini | {precision} | - |")),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON");
    let row = &json["rows"][0];
    assert_eq!(row["precision"], precision, "{json}");
    assert!(row.get("pairs_per_s").is_none(), "{json}");
    let after_start = row["train_first_step_after_start_s"]
        .as_f64()
        .expect("cold start");
    let first_step = row["train_first_step_s"].as_f64().expect("first step");
    assert!(
        first_step > 0.0 && after_start > first_step && after_start < wall,
        "first step {first_step} s, ends {after_start} s after start, process {wall} s"
    );
    assert!(
        row["train_samples_per_s"].as_f64().is_some_and(|s| s > 0.0),
        "{json}"
    );
}

#[test]
fn bench_refuses_a_precision_the_backend_lacks() {
    let wanted = if GPU { "f64" } else { "bf16" };
    let (ok, stdout, stderr) = bench(&["--skip-scoring", "--precision", wanted]);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains(&format!("precision {wanted} is not available")),
        "{stderr}"
    );
}
