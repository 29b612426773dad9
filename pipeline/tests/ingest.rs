//! `pipeline ingest` end to end against an in-process HTTP server on 127.0.0.1 serving the real
//! photos, with hostile routes (robots.txt disallow, `X-Robots-Tag: noai`, 404, a flaky 503, a
//! 1x1 image, a too-small real photo, an exact duplicate, a private address, a German caption, a
//! malformed row), into a local output; then resume, `--retry-failed`, seed pages and the audit.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pipeline::config::IngestConfig;
use pipeline::ingest::{IngestJob, ingest};
use pipeline::sharding::Slice;
use schemas::pair_shard::{self, PairRecord, Status};

const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/photos");
const VOCAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/minilm/vocab.txt");

#[derive(Clone)]
struct Site {
    healthy: Arc<AtomicBool>,
}

fn photo(name: &str) -> Response {
    match std::fs::read(Path::new(PHOTOS).join(name)) {
        Ok(bytes) => {
            let kind = if name.ends_with(".png") {
                "image/png"
            } else {
                "image/jpeg"
            };
            ([(header::CONTENT_TYPE, kind)], bytes).into_response()
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

fn tiny_png() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(1, 1, image::Rgb([200, 30, 30]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

async fn serve() -> (String, Site) {
    let site = Site {
        healthy: Arc::new(AtomicBool::new(false)),
    };
    let page = r#"<html><head><title>Gallery</title></head><body>
        <p>Our trip.</p>
        <img src="/photos/astronaut.png" alt="an astronaut in a white space suit holding a flag">
        <figure><img src="photos/coffee.png"><figcaption>a cup of hot coffee on a small white plate</figcaption></figure>
        </body></html>"#;
    let app = Router::new()
        .route(
            "/robots.txt",
            get(|| async { "User-agent: *\nDisallow: /private/\n" }),
        )
        .route(
            "/photos/{name}",
            get(|UrlPath(name): UrlPath<String>| async move { photo(&name) }),
        )
        .route(
            "/copy/{name}",
            get(|UrlPath(name): UrlPath<String>| async move { photo(&name) }),
        )
        .route(
            "/private/{name}",
            get(|UrlPath(name): UrlPath<String>| async move { photo(&name) }),
        )
        .route(
            "/noai/{name}",
            get(|UrlPath(name): UrlPath<String>| async move {
                let mut response = photo(&name);
                response
                    .headers_mut()
                    .insert("x-robots-tag", "noai".parse().unwrap());
                response
            }),
        )
        .route(
            "/flaky/{name}",
            get(
                |State(site): State<Site>, UrlPath(name): UrlPath<String>| async move {
                    if site.healthy.load(Ordering::SeqCst) {
                        photo(&name)
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE.into_response()
                    }
                },
            ),
        )
        .route(
            "/tiny.png",
            get(|| async { ([(header::CONTENT_TYPE, "image/png")], tiny_png()).into_response() }),
        )
        .route(
            "/page.html",
            get(
                move || async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page) },
            ),
        )
        .with_state(site.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, site)
}

fn config(rows_per_shard: usize) -> IngestConfig {
    let mut config = IngestConfig::default();
    config.output.rows_per_shard = rows_per_shard;
    config.output.vocab = VOCAB.into();
    config.fetch.allow_loopback = true;
    config.fetch.per_host_interval_ms = 0;
    config.fetch.max_retries = 1;
    config.fetch.backoff_base_ms = 10;
    config.fetch.timeout_s = 5.0;
    config
}

fn job(inputs: Vec<String>, output: &Path, config: IngestConfig) -> IngestJob {
    IngestJob {
        inputs,
        output: output.to_str().unwrap().to_owned(),
        config,
        slice: Slice::WHOLE,
        retry_failed: false,
        progress: false,
    }
}

fn read_output(output: &Path) -> Vec<PairRecord> {
    let mut names: Vec<_> = std::fs::read_dir(output)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|name| {
            let bytes = bytes::Bytes::from(std::fs::read(output.join(name)).unwrap());
            pair_shard::read(name, bytes).unwrap()
        })
        .collect()
}

/// The list rows, each with the status and reason it must end with.
fn list_rows(base: &str) -> Vec<(String, &'static str, Status, Option<&'static str>)> {
    vec![
        (
            format!("{base}/photos/astronaut.png"),
            "an astronaut in a white space suit poses next to a flag",
            Status::Kept,
            None,
        ),
        (
            format!("{base}/photos/coffee.png"),
            "a cup of hot coffee on a small plate",
            Status::Kept,
            None,
        ),
        (
            format!("{base}/photos/flower.jpg"),
            "a yellow flower growing in a green garden",
            Status::Kept,
            None,
        ),
        // rows 3 and 4 are the same bytes: one of them is dropped as a duplicate (checked below)
        (
            format!("{base}/copy/flower.jpg"),
            "a flower in the garden photographed in the morning",
            Status::Kept,
            None,
        ),
        (
            format!("{base}/photos/chelsea.png"),
            "a cat sitting on the floor looking at the camera",
            Status::Dropped,
            Some("too_small"),
        ),
        (
            format!("{base}/tiny.png"),
            "a small red icon of a house with a roof",
            Status::Dropped,
            Some("too_small"),
        ),
        (
            format!("{base}/noai/china.jpg"),
            "an old temple in china under a blue sky",
            Status::Dropped,
            Some("noai_header"),
        ),
        (
            format!("{base}/private/rocket.jpg"),
            "a rocket standing on the launch pad at night",
            Status::Dropped,
            Some("robots_disallowed"),
        ),
        (
            format!("{base}/missing.jpg"),
            "a picture of a lake that does not exist on the server",
            Status::FailedPermanent,
            Some("http_404"),
        ),
        (
            format!("{base}/flaky/motorcycle_left.png"),
            "a red motorcycle parked on the side of the street",
            Status::FailedTransient,
            Some("http_503"),
        ),
        (
            format!("{base}/photos/camera.png"),
            "ein Mann mit einer alten Kamera steht auf einer Wiese im Park",
            Status::Dropped,
            Some("language"),
        ),
        (
            "not-a-url".to_owned(),
            "a row without a usable address in it",
            Status::FailedPermanent,
            Some("invalid_input"),
        ),
        (
            "http://10.0.0.1/x.jpg".to_owned(),
            "a photo hosted on a private network address",
            Status::FailedPermanent,
            Some("private_address"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_accounts_for_every_row_resumes_and_retries() {
    let (base, site) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let rows = list_rows(&base);
    let list = dir.path().join("pairs.csv");
    let mut csv = String::from("url,caption\n");
    for (url, caption, _, _) in &rows {
        csv.push_str(&format!("{url},{caption}\n"));
    }
    std::fs::write(&list, csv).unwrap();
    let output = dir.path().join("out");
    let inputs = vec![list.to_str().unwrap().to_owned()];

    let summary = ingest(job(inputs.clone(), &output, config(5)))
        .await
        .unwrap();
    assert_eq!(summary.shards_written, 3, "{summary:?}");
    assert_eq!(summary.rows_written, rows.len() as u64);

    let records = read_output(&output);
    assert_eq!(records.len(), rows.len(), "one output row per input row");
    let by_offset: HashMap<u64, &PairRecord> = records
        .iter()
        .map(|r| (r.source_offset.unwrap(), r))
        .collect();
    for (i, (url, _, status, reason)) in rows.iter().enumerate() {
        let record = by_offset[&(i as u64)];
        assert_eq!(&record.url, url);
        if i == 2 || i == 3 {
            continue;
        }
        assert_eq!(
            (record.status, record.drop_reason.as_deref()),
            (*status, *reason),
            "row {i} {url}: {:?}",
            record.error_message
        );
    }
    let flowers = [by_offset[&2], by_offset[&3]];
    assert_eq!(
        flowers.iter().filter(|r| r.status == Status::Kept).count(),
        1
    );
    let dropped = flowers
        .iter()
        .find(|r| r.status == Status::Dropped)
        .unwrap();
    assert_eq!(dropped.drop_reason.as_deref(), Some("duplicate_image"));
    assert_eq!(flowers[0].sha256, flowers[1].sha256);

    for record in records.iter().filter(|r| r.status == Status::Kept) {
        let jpeg = image::load_from_memory(record.image.as_ref().unwrap()).unwrap();
        assert!(jpeg.width().max(jpeg.height()) <= 512, "{}", record.url);
        assert_eq!(
            (jpeg.width(), jpeg.height()),
            (record.width.unwrap(), record.height.unwrap())
        );
        assert!(record.original_width.unwrap() > 300 && record.original_height.unwrap() > 300);
        assert_eq!(record.language.as_deref(), Some("en"));
        assert!(record.sha256.as_ref().unwrap().len() == 64);
        assert!(record.nsfw_score.is_some() && record.relevance_score.is_some());
    }
    let stats: schemas::shard_stats::ShardStats = serde_json::from_slice(
        &std::fs::read(output.join(schemas::shard_stats::stats_file_name("00000.parquet")))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stats.rows, 5);
    assert_eq!(stats.drop_reasons.get("duplicate_image"), Some(&1));

    let report = pipeline::audit::audit(&inputs, output.to_str().unwrap(), &Default::default())
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.input_rows, rows.len() as u64);
    // The audit's tallies are the sums over every shard's stats file.
    let (mut drops, mut errors) = (BTreeMap::new(), BTreeMap::new());
    for entry in std::fs::read_dir(&output).unwrap() {
        let path = entry.unwrap().path();
        if path.to_str().unwrap().ends_with("_stats.json") {
            let stats: schemas::shard_stats::ShardStats =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            for (tally, counts) in [
                (&mut drops, stats.drop_reasons),
                (&mut errors, stats.error_tallies),
            ] {
                for (what, count) in counts {
                    *tally.entry(what).or_insert(0u64) += count;
                }
            }
        }
    }
    assert!(
        drops.contains_key("duplicate_image") && !errors.is_empty(),
        "{drops:?} {errors:?}"
    );
    assert_eq!(
        (&report.drop_reasons, &report.error_tallies),
        (&drops, &errors)
    );

    // A mistyped input is refused before anything is written.
    let error = ingest(job(
        vec![format!("{}.typo.csv", inputs[0])],
        &dir.path().join("fresh"),
        config(5),
    ))
    .await
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("typo.csv: input file not found"),
        "{error:#}"
    );
    assert!(
        !dir.path()
            .join("fresh")
            .join(pipeline::ingest::RUN_FILE)
            .exists()
    );

    // A rerun finds every shard committed and does nothing.
    let summary = ingest(job(inputs.clone(), &output, config(5)))
        .await
        .unwrap();
    assert_eq!((summary.shards_written, summary.shards_skipped), (0, 3));

    // Another shard size would regroup the rows: refused, naming the output.
    let error = ingest(job(inputs.clone(), &output, config(4)))
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("rows_per_shard"), "{error:#}");

    // The flaky host recovers; --retry-failed rewrites only the shard holding that row.
    site.healthy.store(true, Ordering::SeqCst);
    let mut retry = job(inputs.clone(), &output, config(5));
    retry.retry_failed = true;
    let summary = ingest(retry).await.unwrap();
    assert_eq!(
        (summary.shards_written, summary.shards_skipped),
        (1, 2),
        "{summary:?}"
    );
    let records = read_output(&output);
    let flaky = records.iter().find(|r| r.source_offset == Some(9)).unwrap();
    assert_eq!(flaky.status, Status::Kept, "{:?}", flaky.error_message);
    assert_eq!(records.len(), rows.len());
    let report = pipeline::audit::audit(&inputs, output.to_str().unwrap(), &Default::default())
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_pages_are_fetched_parsed_and_stored_once() {
    let (base, _site) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let seeds = dir.path().join("pages.seeds.txt");
    std::fs::write(
        &seeds,
        format!("# seed pages\n{base}/page.html\n{base}/no-such-page.html\n"),
    )
    .unwrap();
    let output = dir.path().join("out");
    let inputs = vec![seeds.to_str().unwrap().to_owned()];
    ingest(job(inputs.clone(), &output, config(10)))
        .await
        .unwrap();

    let records = read_output(&output);
    let kept: Vec<_> = records
        .iter()
        .filter(|r| r.status == Status::Kept)
        .collect();
    assert_eq!(kept.len(), 2, "{records:#?}");
    assert!(
        kept.iter()
            .all(|r| r.page_url.as_deref() == Some(format!("{base}/page.html").as_str()))
    );
    let coffee = kept
        .iter()
        .find(|r| r.url.ends_with("/photos/coffee.png"))
        .unwrap();
    assert_eq!(
        coffee.text.as_deref(),
        Some("a cup of hot coffee on a small white plate")
    );
    let failed = records
        .iter()
        .find(|r| r.url.ends_with("no-such-page.html"))
        .unwrap();
    assert_eq!(failed.drop_reason.as_deref(), Some("seed_page_failed"));
    assert_eq!(records.len(), 3);
    let report = pipeline::audit::audit(&inputs, output.to_str().unwrap(), &Default::default())
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn config_keys_are_checked_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ingest.toml");
    std::fs::write(&path, "[output]\nrows_per_shard = 0\n").unwrap();
    let error = IngestConfig::load(&path).unwrap_err();
    assert!(
        format!("{error:#}").contains("output.rows_per_shard"),
        "{error:#}"
    );
    std::fs::write(&path, "[fetch]\nper_host_intervl_ms = 5\n").unwrap();
    let error = IngestConfig::load(&path).unwrap_err();
    assert!(
        format!("{error:#}").contains("per_host_intervl_ms"),
        "{error:#}"
    );
}

#[test]
fn the_documented_config_file_equals_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/ingest.toml");
    let mut config = IngestConfig::load(&path).unwrap();
    assert!(config.output.vocab.ends_with("assets/minilm/vocab.txt"));
    config.output.vocab = IngestConfig::default().output.vocab;
    assert_eq!(config, IngestConfig::default());
}

/// The real Common Crawl fixtures through the whole ingest: every `<img>` candidate of the WARC
/// pages and the WAT metadata becomes exactly one row (the audit re-reads the files and matches
/// them). Image hosts are on the internet: fetches fail fast (or succeed where a network exists);
/// only the accounting is asserted, so the test holds either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_common_crawl_files_are_ingested_row_for_row() {
    let dir = tempfile::tempdir().unwrap();
    let commoncrawl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/commoncrawl");
    let inputs: Vec<String> = ["warc", "warc.wat"]
        .iter()
        .map(|ext| {
            commoncrawl
                .join(format!("CC-MAIN-20140820021334-00006.{ext}"))
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut config = config(500);
    config.fetch.allow_loopback = false;
    config.fetch.timeout_s = 2.0;
    config.fetch.connect_timeout_s = 1.0;
    config.fetch.max_retries = 0;
    let output = dir.path().join("out");
    let summary = ingest(job(inputs.clone(), &output, config)).await.unwrap();
    let report = pipeline::audit::audit(&inputs, output.to_str().unwrap(), &Default::default())
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.input_rows > 100, "{report:?}");
    assert_eq!(summary.rows_written, report.input_rows);
    let records = read_output(&output);
    let from_wat = records
        .iter()
        .filter(|r| r.source_file.ends_with(".wat"))
        .count();
    assert!(
        from_wat > 0 && from_wat < records.len(),
        "{from_wat} of {}",
        records.len()
    );
    assert!(
        records
            .iter()
            .all(|r| r.page_url.as_deref().is_some_and(|p| p.starts_with("http"))),
        "every Common Crawl row names its page"
    );
}
