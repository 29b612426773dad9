//! Tests of `pipeline::fetch` against an in-process HTTP server bound to 127.0.0.1.
//!
//! Each test starts its own server on a spawned task (it ends with the test's runtime) and uses
//! small timeouts, so every test stops by itself within seconds.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::{StreamExt, stream};
use pipeline::fetch::{FailureKind, FetchConfig, FetchFailure, FetchOutcome, Fetcher};

const CHELSEA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/photos/chelsea.png");
const FLOWER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/photos/flower.jpg");

/// Upper bound on any single fetch in these tests.
const FETCH_LIMIT: Duration = Duration::from_secs(15);

/// Requests the server saw.
#[derive(Default)]
struct Hits {
    total: AtomicUsize,
    robots: AtomicUsize,
    flaky: AtomicUsize,
    throttled: AtomicUsize,
    truncated: AtomicUsize,
    user_agent: Mutex<Option<String>>,
}

impl Hits {
    fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AppState {
    hits: Arc<Hits>,
    robots_status: StatusCode,
    png: Bytes,
    jpeg: Bytes,
}

struct TestServer {
    /// `http://127.0.0.1:PORT`
    base: String,
    port: u16,
    hits: Arc<Hits>,
    png: Bytes,
    jpeg: Bytes,
}

impl TestServer {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

fn image(content_type: &'static str, bytes: Bytes) -> Response {
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let location = HeaderValue::from_str(location).expect("location");
    (status, [(header::LOCATION, location)]).into_response()
}

/// A streamed response with a declared Content-Length that `body` may not honour.
fn streamed(content_length: Option<u64>, body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    if let Some(length) = content_length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    state.hits.total.fetch_add(1, Ordering::SeqCst);
    if let Some(agent) = request.headers().get(header::USER_AGENT) {
        let agent = String::from_utf8_lossy(agent.as_bytes()).into_owned();
        *state.hits.user_agent.lock().expect("lock") = Some(agent);
    }
    next.run(request).await
}

async fn start_server(robots_status: StatusCode) -> TestServer {
    let png = Bytes::from(std::fs::read(CHELSEA).expect("read chelsea.png"));
    let jpeg = Bytes::from(std::fs::read(FLOWER).expect("read flower.jpg"));
    let hits = Arc::new(Hits::default());
    let state = AppState {
        hits: Arc::clone(&hits),
        robots_status,
        png: png.clone(),
        jpeg: jpeg.clone(),
    };

    let app = Router::new()
        .route(
            "/robots.txt",
            get(|State(s): State<AppState>| async move {
                s.hits.robots.fetch_add(1, Ordering::SeqCst);
                if s.robots_status == StatusCode::OK {
                    "User-agent: *\nDisallow: /private/\n".into_response()
                } else {
                    s.robots_status.into_response()
                }
            }),
        )
        .route(
            "/chelsea.png",
            get(|State(s): State<AppState>| async move { image("image/png", s.png) }),
        )
        .route(
            "/flower.jpg",
            get(|State(s): State<AppState>| async move { image("image/jpeg", s.jpeg) }),
        )
        .route(
            "/private/secret.png",
            get(|State(s): State<AppState>| async move { image("image/png", s.png) }),
        )
        .route(
            "/no-type",
            get(|State(s): State<AppState>| async move { Response::new(Body::from(s.png)) }),
        )
        .route(
            // Headers now, a 1 GiB body that never comes: reading it would hit the timeout.
            "/noai",
            get(|| async {
                let mut response = streamed(
                    Some(1 << 30),
                    Body::from_stream(stream::pending::<Result<Bytes, Infallible>>()),
                );
                response
                    .headers_mut()
                    .insert("x-robots-tag", HeaderValue::from_static("noindex, NoAI"));
                response
            }),
        )
        .route(
            "/noimageai",
            get(|State(s): State<AppState>| async move {
                let mut response = image("image/jpeg", s.jpeg);
                response.headers_mut().insert(
                    "x-robots-tag",
                    HeaderValue::from_static("googlebot: noimageai"),
                );
                response
            }),
        )
        .route(
            "/noindex",
            get(|State(s): State<AppState>| async move {
                let mut response = image("image/jpeg", s.jpeg);
                response.headers_mut().insert(
                    "x-robots-tag",
                    HeaderValue::from_static("noindex, nofollow"),
                );
                response
            }),
        )
        .route(
            "/loop/a",
            get(|| async { redirect(StatusCode::FOUND, "/loop/b") }),
        )
        .route(
            "/loop/b",
            get(|| async { redirect(StatusCode::FOUND, "/loop/a") }),
        )
        .route(
            "/chain/{n}",
            get(|Path(n): Path<u32>| async move {
                if n == 0 {
                    redirect(StatusCode::MOVED_PERMANENTLY, "/chelsea.png")
                } else {
                    redirect(StatusCode::TEMPORARY_REDIRECT, &format!("/chain/{}", n - 1))
                }
            }),
        )
        .route(
            "/to-private",
            get(|| async { redirect(StatusCode::MOVED_PERMANENTLY, "http://10.0.0.1/x") }),
        )
        .route(
            "/to-metadata",
            get(|| async {
                redirect(
                    StatusCode::MOVED_PERMANENTLY,
                    "http://169.254.169.254/latest/meta-data/",
                )
            }),
        )
        .route(
            "/to-ftp",
            get(|| async { redirect(StatusCode::FOUND, "ftp://127.0.0.1/x.png") }),
        )
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/flaky",
            get(|State(s): State<AppState>| async move {
                if s.hits.flaky.fetch_add(1, Ordering::SeqCst) == 0 {
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                } else {
                    image("image/png", s.png)
                }
            }),
        )
        .route(
            "/throttled",
            get(|State(s): State<AppState>| async move {
                if s.hits.throttled.fetch_add(1, Ordering::SeqCst) == 0 {
                    (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response()
                } else {
                    image("image/png", s.png)
                }
            }),
        )
        .route(
            "/throttled-long",
            get(|State(s): State<AppState>| async move {
                s.hits.throttled.fetch_add(1, Ordering::SeqCst);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "3600")],
                )
                    .into_response()
            }),
        )
        .route(
            "/slow",
            get(|| async {
                let first = stream::iter([Ok::<_, Infallible>(Bytes::from_static(&[0; 10]))]);
                let rest = stream::once(async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(Bytes::from_static(&[0; 990]))
                });
                streamed(Some(1000), Body::from_stream(first.chain(rest)))
            }),
        )
        .route(
            "/truncated",
            get(|State(s): State<AppState>| async move {
                s.hits.truncated.fetch_add(1, Ordering::SeqCst);
                // 100 of the promised 1000 bytes, then (once the head and those bytes are
                // flushed) the stream fails and the server drops the connection.
                let first = stream::iter([Ok(Bytes::from_static(&[0; 100]))]);
                let failure = stream::once(async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
                });
                let chunks = first.chain(failure);
                streamed(Some(1000), Body::from_stream(chunks))
            }),
        )
        .route(
            "/big-with-length",
            get(|| async { image("image/png", Bytes::from(vec![0u8; 4096])) }),
        )
        .route(
            "/big-chunked",
            get(|| async {
                let chunks =
                    stream::iter((0..4).map(|_| Ok::<_, Infallible>(Bytes::from(vec![0u8; 1024]))));
                streamed(None, Body::from_stream(chunks))
            }),
        )
        .route(
            "/page.html",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    "<html></html>",
                )
            }),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local addr").port();
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    TestServer {
        base: format!("http://127.0.0.1:{port}"),
        port,
        hits,
        png,
        jpeg,
    }
}

/// Small timeouts and no politeness delays, loopback allowed.
fn test_config() -> FetchConfig {
    FetchConfig {
        allow_loopback: true,
        connect_timeout_s: 1.0,
        timeout_s: 2.0,
        max_retries: 2,
        backoff_base_ms: 10,
        max_retry_after_s: 5,
        per_host_interval_ms: 0,
        ..FetchConfig::default()
    }
}

fn new_fetcher(config: FetchConfig) -> Fetcher {
    Fetcher::new(config).expect("fetcher")
}

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(FETCH_LIMIT, future)
        .await
        .expect("fetch should end within its timeouts")
}

async fn fetch(fetcher: &Fetcher, url: &str) -> FetchOutcome {
    bounded(fetcher.fetch(url)).await
}

fn expect_failure(outcome: FetchOutcome) -> FetchFailure {
    match outcome {
        FetchOutcome::Failed(failure) => failure,
        FetchOutcome::Fetched {
            final_url,
            http_status,
            ..
        } => {
            panic!("expected a failure, fetched {final_url} ({http_status})")
        }
    }
}

fn expect_fetched(outcome: FetchOutcome) -> (String, u16, Option<String>, Bytes) {
    match outcome {
        FetchOutcome::Fetched {
            final_url,
            http_status,
            content_type,
            body,
        } => (final_url, http_status, content_type, body),
        FetchOutcome::Failed(failure) => panic!("expected a fetch, failed: {failure}"),
    }
}

#[tokio::test]
async fn fetches_png_and_jpeg() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(test_config());

    let (final_url, status, content_type, body) =
        expect_fetched(fetch(&fetcher, &server.url("/chelsea.png")).await);
    assert_eq!(final_url, server.url("/chelsea.png"));
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("image/png"));
    assert_eq!(body, server.png);

    let (_, _, content_type, body) =
        expect_fetched(fetch(&fetcher, &server.url("/flower.jpg")).await);
    assert_eq!(content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(body, server.jpeg);

    let agent = server
        .hits
        .user_agent
        .lock()
        .expect("lock")
        .clone()
        .expect("a User-Agent");
    assert!(agent.starts_with("imagebert-pipeline/"), "{agent}");

    let stats = fetcher.stats();
    assert_eq!(stats.fetched, 2);
    assert_eq!(stats.failed, 0);
    assert_eq!(
        stats.body_bytes,
        (server.png.len() + server.jpeg.len()) as u64
    );
}

#[tokio::test]
async fn missing_content_type_is_allowed_and_reported() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(test_config());
    let (_, _, content_type, body) = expect_fetched(fetch(&fetcher, &server.url("/no-type")).await);
    assert_eq!(content_type, None);
    assert_eq!(body, server.png);
}

#[tokio::test]
async fn robots_txt_is_fetched_once_and_obeyed() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(test_config());

    // Concurrent first fetches of one origin share a single robots.txt request.
    let tasks: Vec<_> = [
        "/chelsea.png",
        "/flower.jpg",
        "/chelsea.png",
        "/private/secret.png",
    ]
    .into_iter()
    .map(|path| {
        let fetcher = fetcher.clone();
        let url = server.url(path);
        tokio::spawn(async move { bounded(fetcher.fetch(&url)).await })
    })
    .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    let failure = expect_failure(outcomes.pop().expect("four outcomes"));
    assert_eq!(failure.kind, FailureKind::RobotsDisallowed);
    assert_eq!(failure.kind.code(), "robots_disallowed");
    assert!(!failure.kind.is_transient());
    assert!(
        failure.message.contains("/private/secret.png"),
        "{}",
        failure.message
    );
    for outcome in outcomes {
        expect_fetched(outcome);
    }

    expect_failure(fetch(&fetcher, &server.url("/private/secret.png")).await);
    assert_eq!(Hits::get(&server.hits.robots), 1);
    assert_eq!(fetcher.stats().robots_fetches, 1);
    // 1 robots.txt + 3 images; the disallowed URL was never requested.
    assert_eq!(Hits::get(&server.hits.total), 4);
}

#[tokio::test]
async fn robots_txt_server_error_disallows_the_host() {
    let server = start_server(StatusCode::SERVICE_UNAVAILABLE).await;
    let fetcher = new_fetcher(test_config());
    let failure = expect_failure(fetch(&fetcher, &server.url("/chelsea.png")).await);
    assert_eq!(failure.kind, FailureKind::RobotsUnavailable);
    assert!(failure.kind.is_transient());
    let failure = expect_failure(fetch(&fetcher, &server.url("/flower.jpg")).await);
    assert_eq!(failure.kind, FailureKind::RobotsUnavailable);
    assert_eq!(
        Hits::get(&server.hits.total),
        1,
        "only robots.txt was requested, once"
    );
}

#[tokio::test]
async fn robots_txt_not_found_allows_everything() {
    let server = start_server(StatusCode::NOT_FOUND).await;
    let fetcher = new_fetcher(test_config());
    expect_fetched(fetch(&fetcher, &server.url("/private/secret.png")).await);
    assert_eq!(Hits::get(&server.hits.robots), 1);
}

#[tokio::test]
async fn robots_can_be_ignored_by_config() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(FetchConfig {
        respect_robots: false,
        ..test_config()
    });
    expect_fetched(fetch(&fetcher, &server.url("/private/secret.png")).await);
    assert_eq!(Hits::get(&server.hits.robots), 0);
}

#[tokio::test]
async fn noai_header_is_refused_before_the_body_is_read() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(FetchConfig {
        timeout_s: 1.0,
        ..test_config()
    });
    let started = Instant::now();
    let failure = expect_failure(fetch(&fetcher, &server.url("/noai")).await);
    // The body never arrives and its Content-Length is over the cap: reading it would time out,
    // checking the length first would say body_too_large.
    assert_eq!(failure.kind, FailureKind::NoAiHeader, "{failure}");
    assert_eq!(failure.kind.code(), "noai_header");
    assert_eq!(failure.http_status, Some(200));
    assert!(!failure.kind.is_transient());
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "took {:?}",
        started.elapsed()
    );
    assert!(failure.message.contains("/noai"), "{}", failure.message);
}

#[tokio::test]
async fn agent_scoped_noimageai_is_refused_but_noindex_is_not() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(test_config());
    let failure = expect_failure(fetch(&fetcher, &server.url("/noimageai")).await);
    assert_eq!(failure.kind, FailureKind::NoAiHeader);
    expect_fetched(fetch(&fetcher, &server.url("/noindex")).await);
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(FetchConfig {
        max_redirects: 5,
        ..test_config()
    });

    // 3 hops within /chain, then one to the image: 4 redirects.
    let (final_url, _, _, body) = expect_fetched(fetch(&fetcher, &server.url("/chain/3")).await);
    assert_eq!(final_url, server.url("/chelsea.png"));
    assert_eq!(body, server.png);
    assert_eq!(fetcher.stats().redirects, 4);

    let failure = expect_failure(fetch(&fetcher, &server.url("/chain/9")).await);
    assert_eq!(failure.kind, FailureKind::TooManyRedirects);
    assert_eq!(failure.kind.code(), "too_many_redirects");
    assert!(failure.message.contains("/chain/9"), "{}", failure.message);
}

#[tokio::test]
async fn redirect_loop_is_refused() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(FetchConfig {
        max_redirects: 20,
        ..test_config()
    });
    let failure = expect_failure(fetch(&fetcher, &server.url("/loop/a")).await);
    assert_eq!(failure.kind, FailureKind::TooManyRedirects);
    // robots.txt, /loop/a and /loop/b: the loop is noticed without going round it again.
    assert_eq!(Hits::get(&server.hits.total), 3);
}

#[tokio::test]
async fn redirects_to_private_addresses_are_refused_without_connecting() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(test_config());
    for path in ["/to-private", "/to-metadata"] {
        let started = Instant::now();
        let failure = expect_failure(fetch(&fetcher, &server.url(path)).await);
        assert_eq!(failure.kind, FailureKind::PrivateAddress, "{failure}");
        assert_eq!(failure.kind.code(), "private_address");
        assert!(!failure.kind.is_transient());
        assert!(failure.message.contains(path), "{}", failure.message);
        // Connecting would take up to the 1 s connect timeout.
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "took {:?}",
            started.elapsed()
        );
    }
    let failure = expect_failure(fetch(&fetcher, &server.url("/to-ftp")).await);
    assert_eq!(failure.kind, FailureKind::BadScheme);
    assert_eq!(
        fetcher.stats().robots_fetches,
        1,
        "no robots.txt was asked of refused hosts"
    );
}

#[tokio::test]
async fn loopback_is_refused_without_allow_loopback() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(FetchConfig {
        allow_loopback: false,
        ..test_config()
    });
    // An IP literal is refused before any request; a name is refused after DNS resolution.
    let urls = [
        server.url("/chelsea.png"),
        format!("http://localhost:{}/chelsea.png", server.port),
    ];
    for url in urls {
        let failure = expect_failure(fetch(&fetcher, &url).await);
        assert_eq!(
            failure.kind,
            FailureKind::PrivateAddress,
            "{url}: {failure}"
        );
        assert!(failure.message.contains(&url), "{}", failure.message);
    }
    assert_eq!(Hits::get(&server.hits.total), 0);
}

#[tokio::test]
async fn hosts_outside_allowed_hosts_are_refused_without_a_request() {
    let server = start_server(StatusCode::OK).await;
    let elsewhere = new_fetcher(FetchConfig {
        allowed_hosts: vec!["example.org".to_owned()],
        ..test_config()
    });
    let url = server.url("/chelsea.png");
    let failure = expect_failure(fetch(&elsewhere, &url).await);
    assert_eq!(failure.kind, FailureKind::HostNotAllowed, "{failure}");
    assert!(failure.kind.is_refusal() && !failure.kind.is_transient());
    assert!(failure.message.contains("fetch.allowed_hosts"), "{failure}");
    assert_eq!(Hits::get(&server.hits.total), 0);

    let here = new_fetcher(FetchConfig {
        allowed_hosts: vec!["127.0.0.1".to_owned()],
        ..test_config()
    });
    expect_fetched(fetch(&here, &url).await);
}

#[tokio::test]
async fn bad_urls_and_schemes_are_refused() {
    let fetcher = new_fetcher(test_config());
    let failure = expect_failure(fetch(&fetcher, "not a url").await);
    assert_eq!(failure.kind, FailureKind::BadUrl);
    assert!(failure.message.contains("not a url"));
    for url in [
        "ftp://127.0.0.1/a.png",
        "file:///etc/passwd",
        "data:image/png;base64,AAAA",
    ] {
        let failure = expect_failure(fetch(&fetcher, url).await);
        assert_eq!(failure.kind, FailureKind::BadScheme, "{url}");
        assert_eq!(failure.kind.code(), "bad_scheme");
    }
}

#[tokio::test]
async fn not_found_is_a_permanent_failure() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(test_config());
    let failure = expect_failure(fetch(&fetcher, &server.url("/missing")).await);
    assert_eq!(failure.kind, FailureKind::HttpClientError);
    assert_eq!(failure.kind.code(), "http_4xx");
    assert_eq!(failure.http_status, Some(404));
    assert!(!failure.kind.is_transient());
    assert_eq!(fetcher.stats().retries, 0);
}

#[tokio::test]
async fn server_error_is_retried() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(test_config());
    let (_, status, _, body) = expect_fetched(fetch(&fetcher, &server.url("/flaky")).await);
    assert_eq!(status, 200);
    assert_eq!(body, server.png);
    assert_eq!(Hits::get(&server.hits.flaky), 2);
    assert_eq!(fetcher.stats().retries, 1);
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(test_config());
    let started = Instant::now();
    expect_fetched(fetch(&fetcher, &server.url("/throttled")).await);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(Hits::get(&server.hits.throttled), 2);
}

#[tokio::test]
async fn retry_after_beyond_the_cap_is_not_waited_for() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(test_config());
    let started = Instant::now();
    let failure = expect_failure(fetch(&fetcher, &server.url("/throttled-long")).await);
    assert_eq!(failure.kind, FailureKind::RateLimited);
    assert_eq!(failure.kind.code(), "rate_limited");
    assert_eq!(failure.http_status, Some(429));
    assert!(failure.kind.is_transient());
    assert_eq!(Hits::get(&server.hits.throttled), 1);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn slow_body_times_out() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(FetchConfig {
        timeout_s: 1.0,
        max_retries: 0,
        ..test_config()
    });
    let started = Instant::now();
    let failure = expect_failure(fetch(&fetcher, &server.url("/slow")).await);
    assert_eq!(failure.kind, FailureKind::Timeout, "{failure}");
    assert!(failure.kind.is_transient());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "took {elapsed:?}"
    );
}

#[tokio::test]
async fn truncated_body_is_a_transient_failure() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(FetchConfig {
        max_retries: 1,
        ..test_config()
    });
    let failure = expect_failure(fetch(&fetcher, &server.url("/truncated")).await);
    assert_eq!(failure.kind, FailureKind::TruncatedBody, "{failure}");
    assert_eq!(failure.kind.code(), "truncated_body");
    assert!(failure.kind.is_transient());
    assert_eq!(Hits::get(&server.hits.truncated), 2, "tried twice");
}

#[tokio::test]
async fn bodies_over_the_cap_are_refused() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(FetchConfig {
        max_body_bytes: 1024,
        ..test_config()
    });
    for path in ["/big-with-length", "/big-chunked"] {
        let failure = expect_failure(fetch(&fetcher, &server.url(path)).await);
        assert_eq!(failure.kind, FailureKind::BodyTooLarge, "{path}: {failure}");
        assert_eq!(failure.kind.code(), "body_too_large");
        assert!(!failure.kind.is_transient());
    }
}

#[tokio::test]
async fn wrong_content_type_is_refused() {
    let server = start_server(StatusCode::OK).await;
    let fetcher = new_fetcher(test_config());
    let failure = expect_failure(fetch(&fetcher, &server.url("/page.html")).await);
    assert_eq!(failure.kind, FailureKind::ContentType);
    assert_eq!(failure.kind.code(), "content_type");
    assert!(failure.message.contains("text/html"), "{}", failure.message);

    // The accepted list is configurable.
    let png_only = new_fetcher(FetchConfig {
        allowed_content_types: vec!["image/png".into()],
        ..test_config()
    });
    let failure = expect_failure(fetch(&png_only, &server.url("/flower.jpg")).await);
    assert_eq!(failure.kind, FailureKind::ContentType);
    expect_fetched(fetch(&png_only, &server.url("/chelsea.png")).await);
}

#[tokio::test]
async fn requests_to_one_host_are_spaced() {
    let server = start_server(StatusCode::OK).await;
    let interval = Duration::from_millis(200);
    let fetcher = new_fetcher(FetchConfig {
        per_host_interval_ms: 200,
        respect_robots: false,
        ..test_config()
    });
    let started = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let fetcher = fetcher.clone();
            let url = server.url("/flower.jpg");
            tokio::spawn(async move { bounded(fetcher.fetch(&url)).await })
        })
        .collect();
    for task in tasks {
        expect_fetched(task.await.expect("task"));
    }
    assert!(
        started.elapsed() >= interval * 3,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(fetcher.stats().requests, 4);
}

#[test]
fn config_deserializes_with_defaults_and_refuses_unknown_fields() {
    let config: FetchConfig = serde_json::from_str(
        r#"{"max_redirects": 2, "allow_loopback": true, "contact": "ops@example.org"}"#,
    )
    .expect("valid config");
    assert_eq!(config.max_redirects, 2);
    assert!(config.allow_loopback);
    assert_eq!(config.max_body_bytes, 16 * 1024 * 1024);
    assert_eq!(config.max_retries, 3);
    assert!(config.respect_robots);
    assert!(config.user_agent.starts_with("imagebert-pipeline/"));
    assert!(Fetcher::new(config).is_ok());

    let defaults: FetchConfig = serde_json::from_str("{}").expect("empty config");
    assert_eq!(defaults, FetchConfig::default());
    assert!(!defaults.allow_loopback);
    assert_eq!(defaults.max_redirects, 5);

    assert!(serde_json::from_str::<FetchConfig>(r#"{"max_redirect": 2}"#).is_err());
    assert!(
        Fetcher::new(FetchConfig {
            timeout_s: 0.0,
            ..FetchConfig::default()
        })
        .is_err()
    );
}

#[test]
fn failure_kinds_have_stable_codes() {
    let transient = [
        (FailureKind::Timeout, "timeout"),
        (FailureKind::Connect, "connect"),
        (FailureKind::Network, "network"),
        (FailureKind::TruncatedBody, "truncated_body"),
        (FailureKind::RateLimited, "rate_limited"),
        (FailureKind::HttpServerError, "http_5xx"),
        (FailureKind::RobotsUnavailable, "robots_unavailable"),
    ];
    let permanent = [
        (FailureKind::BadUrl, "bad_url"),
        (FailureKind::BadScheme, "bad_scheme"),
        (FailureKind::PrivateAddress, "private_address"),
        (FailureKind::RobotsDisallowed, "robots_disallowed"),
        (FailureKind::NoAiHeader, "noai_header"),
        (FailureKind::TooManyRedirects, "too_many_redirects"),
        (FailureKind::BadRedirect, "bad_redirect"),
        (FailureKind::HttpClientError, "http_4xx"),
        (FailureKind::UnexpectedStatus, "unexpected_status"),
        (FailureKind::BodyTooLarge, "body_too_large"),
        (FailureKind::ContentType, "content_type"),
    ];
    for (kind, code) in transient {
        assert_eq!(kind.code(), code);
        assert_eq!(kind.to_string(), code);
        assert!(kind.is_transient(), "{code}");
    }
    for (kind, code) in permanent {
        assert_eq!(kind.code(), code);
        assert!(!kind.is_transient(), "{code}");
    }
}
