//! `trainer finetune` and `trainer eval` as a user runs them: bad input is refused with a message
//! naming the file, key or flag, before any work starts (the happy path is in `retrieval.rs`).

use std::process::Command;

fn trainer(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .expect("run trainer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configs_and_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("finetune.toml");
    std::fs::write(
        &config,
        "[data]\nkarpathy = \"k.json\"\nfeatures = \"f\"\n[train]\noutput = \"o\"\nsteps = 5\n[objective]\nmargin = -1.0\n",
    )
    .unwrap();
    let (ok, stderr) = trainer(&["finetune", "--config", config.to_str().unwrap()]);
    assert!(
        !ok && stderr.contains("objective.margin must not be negative"),
        "{stderr}"
    );
    assert!(stderr.contains("finetune.toml"), "{stderr}");

    let missing = dir.path().join("missing.json");
    let vocab = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/minilm/vocab.txt");
    let common = [
        "eval",
        "--vocab",
        vocab,
        "--checkpoint",
        "none",
        "--features",
        "f",
        "--output",
        "o",
        "--karpathy",
    ];
    let (ok, stderr) = trainer(&[&common[..], &[missing.to_str().unwrap()]].concat());
    assert!(!ok && stderr.contains("missing.json"), "{stderr}");
    let (ok, stderr) = trainer(&[&common[..], &["k.json", "--protocol", "coco"]].concat());
    assert!(!ok && stderr.contains("protocol `coco`"), "{stderr}");
    let (ok, stderr) = trainer(&[&common[..], &["k.json", "--splits", "dev"]].concat());
    assert!(!ok && stderr.contains("`dev` is not train"), "{stderr}");
    let (ok, stderr) = trainer(&["eval", "--help"]);
    assert!(ok, "{stderr}");
}
