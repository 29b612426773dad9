//! `Location` on the local file system: the same calls the stages make on S3 (the S3 path runs
//! against a real S3 server in `scripts/test-cluster`).

use bytes::Bytes;
use storage::Location;

#[tokio::test]
async fn local_location_puts_gets_lists_and_creates_conditionally() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("out/shards");
    let location = Location::parse(root.to_str().unwrap()).unwrap();
    assert!(root.is_dir(), "a local location is created on parse");

    assert!(!location.exists("00000.parquet").await.unwrap());
    assert_eq!(location.get_if_exists("00000.parquet").await.unwrap(), None);
    location
        .put("00000.parquet", Bytes::from_static(b"shard"))
        .await
        .unwrap();
    location
        .put("sub/dir/file.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert!(location.exists("00000.parquet").await.unwrap());
    assert_eq!(location.get("00000.parquet").await.unwrap(), &b"shard"[..]);
    assert_eq!(
        location.list().await.unwrap(),
        vec!["00000.parquet".to_owned(), "sub/dir/file.json".to_owned()]
    );

    assert!(
        !location
            .put_if_absent("00000.parquet", Bytes::from_static(b"other"))
            .await
            .unwrap(),
        "an existing object is not replaced"
    );
    assert_eq!(location.get("00000.parquet").await.unwrap(), &b"shard"[..]);
    assert!(
        location
            .put_if_absent("new.json", Bytes::from_static(b"1"))
            .await
            .unwrap()
    );

    location.delete("00000.parquet").await.unwrap();
    location.delete("00000.parquet").await.unwrap();
    assert!(!location.exists("00000.parquet").await.unwrap());
    let error = location.get("missing.parquet").await.unwrap_err();
    assert!(
        format!("{error:#}").contains("missing.parquet"),
        "errors name the object: {error:#}"
    );
}

#[test]
fn unknown_schemes_are_refused_by_name() {
    let error = Location::parse("ftp://host/data").unwrap_err();
    assert!(format!("{error:#}").contains("ftp"), "{error:#}");
}

#[test]
fn file_uris_and_trailing_slashes() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("file://{}/", dir.path().display());
    let location = Location::parse(&uri).unwrap();
    assert_eq!(
        location.uri_of("a.json"),
        format!("file://{}/a.json", dir.path().display())
    );
}

#[test]
fn blocking_calls_work_without_a_runtime_of_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("b.bin"), b"bee").unwrap();
    std::fs::write(dir.path().join("sub/a.bin"), b"ay").unwrap();
    let location = Location::parse(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(location.list_blocking().unwrap(), ["b.bin", "sub/a.bin"]);
    assert_eq!(&location.get_blocking("sub/a.bin").unwrap()[..], b"ay");
    // Called again from another thread: the shared runtime still serves it.
    let again = std::thread::spawn(move || location.get_blocking("b.bin").unwrap());
    assert_eq!(&again.join().unwrap()[..], b"bee");
}

#[tokio::test]
async fn a_run_file_is_claimed_once_and_a_different_spec_is_reported() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Spec {
        shards: u32,
    }
    let dir = tempfile::tempdir().unwrap();
    let location = Location::parse(dir.path().to_str().unwrap()).unwrap();
    let claim = |spec: Spec| {
        let location = location.clone();
        async move { location.claim_run_file("_run.json", &spec).await }
    };
    assert_eq!(
        claim(Spec { shards: 4 }).await.unwrap(),
        None,
        "first claim"
    );
    assert_eq!(
        claim(Spec { shards: 4 }).await.unwrap(),
        None,
        "same spec again"
    );
    assert_eq!(
        claim(Spec { shards: 5 }).await.unwrap(),
        Some(Spec { shards: 4 }),
        "a different spec gets the one already there"
    );
    std::fs::write(dir.path().join("_bad.json"), b"not json").unwrap();
    let error = location
        .claim_run_file("_bad.json", &Spec { shards: 1 })
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("_bad.json"), "{error:#}");
}
