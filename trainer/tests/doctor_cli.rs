//! `trainer doctor` run as a user would, on the backend this test build was compiled with.

use std::process::Command;

#[test]
fn doctor_reports_a_passing_self_check_and_the_backend() {
    let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["doctor", "--size", "32"])
        .output()
        .expect("run trainer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("self-check         ok"), "{stdout}");
    assert!(stdout.contains(backend::BACKEND_NAME), "{stdout}");
}

#[test]
fn doctor_refuses_a_zero_size() {
    let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["doctor", "--size", "0"])
        .output()
        .expect("run trainer");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
}
