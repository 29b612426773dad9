//! `trainer run` as a user runs it: a run killed with SIGKILL mid-way and started again ends with
//! the same final weights and the same loss log as a run that was never interrupted; and
//! `train.fixed_shapes` pads the batches without changing the losses (dropout aside).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{config_text, losses, trainer, weights, write_dataset};

const STEPS: usize = 200;

fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("stage1.toml");
    let train = format!(
        "steps = {STEPS}\nbatch_size = 4\nmax_tokens = 80\nlearning_rate = 1e-3\n\
         warmup_steps = 10\ncheckpoint_every = 20\nkeep_checkpoints = 2"
    );
    std::fs::write(&path, config_text(&train)).unwrap();
    write_dataset(&dir.join("data"), 2);
    path
}

fn final_weights(dir: &Path) -> Vec<f32> {
    weights(dir, STEPS as u64)
}

#[test]
fn a_run_killed_mid_way_resumes_to_the_same_weights_and_loss_log() {
    let whole = tempfile::tempdir().unwrap();
    let config = write_config(whole.path());
    let out = trainer(&config).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let killed = tempfile::tempdir().unwrap();
    let config = write_config(killed.path());
    let mut child = trainer(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = killed.path().join("run/log.jsonl");
    let started = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= 50 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no progress in the log"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let lines_at_kill = losses(killed.path()).len();
    assert!(lines_at_kill < STEPS, "the run finished before the kill");

    let out = trainer(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("resumed from step 0)"),
        "the second run did not resume: {stdout}"
    );

    let (expected, got) = (losses(whole.path()), losses(killed.path()));
    assert_eq!(got.len(), STEPS);
    assert_eq!(got, expected, "loss logs differ");
    assert!(
        final_weights(killed.path()) == final_weights(whole.path()),
        "final weights differ"
    );
}

#[test]
fn fixed_shapes_train_on_the_same_losses() {
    let run = |fixed: bool| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage1.toml");
        let train = format!(
            "steps = 3\nbatch_size = 4\nmax_tokens = 80\nlearning_rate = 1e-3\n\
             checkpoint_every = 3\nfixed_shapes = {fixed}"
        );
        // Without dropout: its random masks are drawn over the padded shapes, so they differ.
        let text = config_text(&train).replace("dropout = 0.1", "dropout = 0.0");
        assert!(text.contains("dropout = 0.0"));
        std::fs::write(&path, text).unwrap();
        write_dataset(&dir.path().join("data"), 1);
        let out = trainer(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        losses(dir.path())
    };
    let (natural, padded) = (run(false), run(true));
    assert_eq!(natural.len(), 3);
    for (a, b) in natural.iter().zip(&padded) {
        for key in ["loss", "mlm", "moc", "mrfr", "itm"] {
            let (a, b) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                "{key}: {a} without fixed shapes, {b} with"
            );
        }
    }
}
