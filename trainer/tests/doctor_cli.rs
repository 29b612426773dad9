//! `trainer doctor` run as a user would, on the backend this build was compiled with (the flag
//! parsing and the check itself are tested in the backend crate).

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
