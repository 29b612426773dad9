//! Safe, polite HTTP image fetching for the crawler (`pipeline ingest`).
//!
//! [`Fetcher::fetch`] downloads one image URL and returns a [`FetchOutcome`]. Every request,
//! including each redirect hop (followed by hand, up to `max_redirects`) and robots.txt:
//!
//! - uses http or https only, never a proxy, and connects only to public unicast addresses:
//!   IP-literal hosts are checked before the request, host names after DNS resolution (private,
//!   CGNAT, unique-local, loopback, link-local, multicast, unspecified, broadcast, documentation
//!   and reserved ranges are refused; `allow_loopback` lets tests reach 127.0.0.0/8 and ::1);
//! - obeys robots.txt, fetched once per origin and cached for the fetcher's life, matched by
//!   the User-Agent's product token; following Google and RFC 9309, a robots.txt answering 4xx
//!   (other than 429) means no rules, and one answering 429 or 5xx, unreachable or unparsable
//!   makes the whole origin disallowed for the run (`robots_unavailable`);
//! - waits its turn in a per-host schedule (`per_host_interval_ms` between request starts) and
//!   in a global limit of `max_concurrency` requests in flight;
//! - is bounded by `connect_timeout_s` and `timeout_s`.
//!
//! A response whose `X-Robots-Tag` says `noai` or `noimageai` is refused from its headers,
//! before any of the body is read; so are a disallowed `Content-Type` and a `Content-Length`
//! over `max_body_bytes`. The body is read as a stream and abandoned once it passes the cap.
//! Transient failures (timeouts, connection errors, truncated bodies, 429 and 5xx) are retried
//! up to `max_retries` times with exponential backoff, waiting at least as long as a
//! `Retry-After` asks (up to `max_retry_after_s`; a longer request is not retried).
//!
//! Decoding the image, and limits on its pixels, are left to the caller.

mod address;
mod config;
mod headers;
mod limiter;
mod outcome;
mod robots;
mod transfer;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use reqwest::header::{ACCEPT, HeaderValue, LOCATION};
use reqwest::{Response, StatusCode};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;
use url::Url;

pub use self::config::FetchConfig;
pub use self::outcome::{FailureKind, FetchFailure, FetchOutcome};

use self::address::GuardedResolver;
use self::config::Settings;
use self::limiter::HostLimiter;
use self::robots::{MAX_ROBOTS_BYTES, MAX_ROBOTS_REDIRECTS, RobotsCache, RobotsPolicy};
use self::transfer::{BodyError, Overflow, classify, error_chain, read_body};

/// Downloads images politely and safely; see the [module documentation](self).
///
/// Cloning is cheap and clones share everything (connection pool, robots.txt cache, per-host
/// schedule, concurrency limit and counters), so one fetcher serves many tokio tasks at once.
#[derive(Debug, Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

/// Counts of what a [`Fetcher`] (and its clones) did so far; see [`Fetcher::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// HTTP requests sent, robots.txt, retries and redirect hops included.
    pub requests: u64,
    /// Retries after transient failures.
    pub retries: u64,
    /// Redirects followed.
    pub redirects: u64,
    /// robots.txt policies fetched (one per origin).
    pub robots_fetches: u64,
    /// Fetches that returned [`FetchOutcome::Fetched`].
    pub fetched: u64,
    /// Fetches that returned [`FetchOutcome::Failed`].
    pub failed: u64,
    /// Body bytes of the successful fetches.
    pub body_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    redirects: AtomicU64,
    robots_fetches: AtomicU64,
    fetched: AtomicU64,
    failed: AtomicU64,
    body_bytes: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    client: reqwest::Client,
    limiter: HostLimiter,
    robots: RobotsCache,
    permits: Semaphore,
    counters: Counters,
}

/// Where one request leads.
enum Step {
    /// The final answer.
    Done(FetchOutcome),
    /// A redirect to follow.
    Redirect(Url),
}

/// A failed attempt, and how long its `Retry-After` asked to wait.
struct AttemptFailure {
    failure: FetchFailure,
    retry_after: Option<Duration>,
}

impl From<FetchFailure> for AttemptFailure {
    fn from(failure: FetchFailure) -> Self {
        Self {
            failure,
            retry_after: None,
        }
    }
}

impl Fetcher {
    /// Validates `config` and builds the HTTP client (rustls, no proxy, no automatic
    /// redirects, address-filtering DNS resolver).
    pub fn new(config: FetchConfig) -> anyhow::Result<Self> {
        let settings = config.validate().context("invalid fetch configuration")?;
        let client = reqwest::Client::builder()
            .user_agent(settings.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .dns_resolver(Arc::new(GuardedResolver {
                allow_loopback: settings.allow_loopback,
            }))
            .build()
            .context("building the HTTP client")?;
        tracing::debug!(user_agent = ?settings.user_agent, "fetcher ready");
        Ok(Self {
            inner: Arc::new(Inner {
                limiter: HostLimiter::new(settings.per_host_interval),
                robots: RobotsCache::default(),
                permits: Semaphore::new(settings.max_concurrency),
                counters: Counters::default(),
                client,
                settings,
            }),
        })
    }

    /// Fetches the image at `url`, following redirects and retrying transient failures.
    ///
    /// Never panics on bad input: every problem is a [`FetchOutcome::Failed`] whose message
    /// names the URL.
    pub async fn fetch(&self, url: &str) -> FetchOutcome {
        self.fetch_as(url, Wanted::Image).await
    }

    /// Fetches the HTML page at `url` (a seed page), with the same rules as [`Fetcher::fetch`]
    /// except that only `text/html` and `application/xhtml+xml` are accepted.
    pub async fn fetch_page(&self, url: &str) -> FetchOutcome {
        self.fetch_as(url, Wanted::Page).await
    }

    async fn fetch_as(&self, url: &str, wanted: Wanted) -> FetchOutcome {
        let counters = &self.inner.counters;
        match self.inner.fetch(url, wanted).await {
            Ok(outcome) => {
                if let FetchOutcome::Fetched {
                    final_url,
                    http_status,
                    content_type,
                    body,
                } = &outcome
                {
                    bump(&counters.fetched, 1);
                    bump(&counters.body_bytes, body.len() as u64);
                    tracing::debug!(
                        url,
                        final_url,
                        http_status,
                        ?content_type,
                        bytes = body.len(),
                        "fetched"
                    );
                }
                outcome
            }
            Err(failure) => {
                bump(&counters.failed, 1);
                tracing::debug!(
                    url,
                    code = failure.kind.code(),
                    http_status = ?failure.http_status,
                    message = %failure.message,
                    "fetch failed"
                );
                FetchOutcome::Failed(failure)
            }
        }
    }

    /// A snapshot of the counters shared by this fetcher and its clones.
    pub fn stats(&self) -> FetchStats {
        let c = &self.inner.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        FetchStats {
            requests: load(&c.requests),
            retries: load(&c.retries),
            redirects: load(&c.redirects),
            robots_fetches: load(&c.robots_fetches),
            fetched: load(&c.fetched),
            failed: load(&c.failed),
            body_bytes: load(&c.body_bytes),
        }
    }
}

/// The content types a seed page may have.
const PAGE_TYPES: &str = "text/html, application/xhtml+xml";

/// What a request is for: an image (the configured image types) or a seed page (HTML).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Image,
    Page,
}

impl Wanted {
    fn accepts(self, media_type: &str, image_types: &[String]) -> bool {
        match self {
            Wanted::Image => image_types.iter().any(|t| t == media_type),
            Wanted::Page => PAGE_TYPES.split(", ").any(|t| t == media_type),
        }
    }
}

impl Inner {
    async fn fetch(&self, raw: &str, wanted: Wanted) -> Result<FetchOutcome, FetchFailure> {
        let original = Url::parse(raw).map_err(|error| {
            FetchFailure::new(FailureKind::BadUrl, format!("{raw}: invalid URL: {error}"))
        })?;
        let mut url = original.clone();
        let mut visited = HashSet::new();
        let mut redirects = 0;
        loop {
            let step = self.fetch_hop(&url, wanted).await.map_err(|mut failure| {
                if redirects > 0 {
                    failure
                        .message
                        .push_str(&format!(" (redirected from {original})"));
                }
                failure
            })?;
            let next = match step {
                Step::Done(outcome) => return Ok(outcome),
                Step::Redirect(next) => next,
            };
            visited.insert(url.to_string());
            if visited.contains(next.as_str()) {
                return Err(FetchFailure::new(
                    FailureKind::TooManyRedirects,
                    format!("{url} redirects to {next}: redirect loop (fetching {original})"),
                ));
            }
            redirects += 1;
            if redirects > self.settings.max_redirects {
                return Err(FetchFailure::new(
                    FailureKind::TooManyRedirects,
                    format!(
                        "{original}: more than {} redirects (last {url} -> {next})",
                        self.settings.max_redirects
                    ),
                ));
            }
            bump(&self.counters.redirects, 1);
            tracing::debug!(from = %url, to = %next, "following redirect");
            url = next;
        }
    }

    /// Requests one URL (one redirect hop), with its checks and retries.
    async fn fetch_hop(&self, url: &Url, wanted: Wanted) -> Result<Step, FetchFailure> {
        address::check_url(url, self.settings.allow_loopback)?;
        let host = url.host_str().unwrap_or_default();
        if !self.settings.host_allowed(host) {
            return Err(FetchFailure::new(
                FailureKind::HostNotAllowed,
                format!("{url}: host {host} is not in fetch.allowed_hosts"),
            ));
        }
        if self.settings.respect_robots {
            let cell = self.robots.cell(url);
            let policy = cell.get_or_init(|| self.fetch_robots(url)).await;
            policy.check(url, &self.settings.robots_agent)?;
        }
        let mut retries = 0;
        loop {
            let AttemptFailure {
                mut failure,
                retry_after,
            } = match self.attempt(url, host, wanted).await {
                Ok(step) => return Ok(step),
                Err(failed) => failed,
            };
            let max_wait = self.settings.max_retry_after;
            if let Some(wait) = retry_after {
                // Other tasks wait too, but never for longer than the cap.
                self.limiter
                    .defer(host, Instant::now() + wait.min(max_wait));
            }
            if !failure.kind.is_transient() || retries >= self.settings.max_retries {
                return Err(failure);
            }
            if let Some(wait) = retry_after
                && wait > max_wait
            {
                failure.message.push_str(&format!(
                    "; Retry-After {wait:?} is longer than the {max_wait:?} cap"
                ));
                return Err(failure);
            }
            let backoff = self
                .settings
                .backoff_base
                .saturating_mul(2u32.saturating_pow(retries))
                .min(max_wait);
            let delay = retry_after.map_or(backoff, |wait| wait.max(backoff));
            retries += 1;
            bump(&self.counters.retries, 1);
            tracing::debug!(%url, code = failure.kind.code(), retry = retries, ?delay, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// Waits for the host's turn and a concurrency permit, and sends a GET.
    async fn send(
        &self,
        url: &Url,
        host: &str,
        accept: HeaderValue,
    ) -> Result<(Response, SemaphorePermit<'_>), FetchFailure> {
        let permit = loop {
            self.limiter.wait_turn(host).await;
            let permit = self.permits.acquire().await.map_err(|_| {
                FetchFailure::new(FailureKind::Network, format!("{url}: fetcher is shut down"))
            })?;
            if self.limiter.try_start(host) {
                break permit;
            }
            // Our turn passed while we waited for the permit; queue again without holding it.
            tracing::debug!(%host, "host turn missed; waiting again");
        };
        bump(&self.counters.requests, 1);
        tracing::debug!(%url, "GET");
        let response = self
            .client
            .get(url.clone())
            .header(ACCEPT, accept)
            .send()
            .await
            .map_err(|error| {
                FetchFailure::new(classify(&error), format!("{url}: {}", error_chain(&error)))
            })?;
        // Defence in depth: the resolver and the URL check already keep these out.
        if let Some(peer) = response.remote_addr()
            && address::is_refused(peer.ip(), self.settings.allow_loopback)
        {
            return Err(FetchFailure::new(
                FailureKind::PrivateAddress,
                format!("{url}: connected to non-public address {}", peer.ip()),
            ));
        }
        Ok((response, permit))
    }

    /// One request for an image (or page) and its checks, body included.
    async fn attempt(&self, url: &Url, host: &str, wanted: Wanted) -> Result<Step, AttemptFailure> {
        let accept = match wanted {
            Wanted::Image => self.settings.accept.clone(),
            Wanted::Page => HeaderValue::from_static(PAGE_TYPES),
        };
        let (response, _permit) = self.send(url, host, accept).await?;
        let status = response.status();
        let code = status.as_u16();
        let fail = |kind: FailureKind, detail: String| {
            FetchFailure::with_status(kind, code, format!("{url}: {detail}"))
        };

        if let Some(tag) = headers::ai_opt_out(response.headers()) {
            return Err(fail(
                FailureKind::NoAiHeader,
                format!("X-Robots-Tag {tag:?} opts out of AI use"),
            )
            .into());
        }
        if status.is_redirection() {
            return redirect_target(url, &response)
                .map(Step::Redirect)
                .ok_or_else(|| {
                    fail(
                        FailureKind::BadRedirect,
                        format!("{status} without a usable Location"),
                    )
                    .into()
                });
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            let retry_after = headers::retry_after(response.headers(), SystemTime::now());
            let kind = if status == StatusCode::TOO_MANY_REQUESTS {
                FailureKind::RateLimited
            } else {
                FailureKind::HttpServerError
            };
            return Err(AttemptFailure {
                failure: fail(kind, format!("answered {status}")),
                retry_after,
            });
        }
        if status.is_server_error() {
            return Err(fail(FailureKind::HttpServerError, format!("answered {status}")).into());
        }
        if status.is_client_error() {
            return Err(fail(FailureKind::HttpClientError, format!("answered {status}")).into());
        }
        if !status.is_success()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::RESET_CONTENT
        {
            return Err(fail(FailureKind::UnexpectedStatus, format!("answered {status}")).into());
        }

        let content_type = headers::media_type(response.headers()).map_err(|raw| {
            fail(
                FailureKind::ContentType,
                format!("unreadable Content-Type {raw:?}"),
            )
        })?;
        match &content_type {
            Some(media_type)
                if !wanted.accepts(media_type, &self.settings.allowed_content_types) =>
            {
                return Err(fail(
                    FailureKind::ContentType,
                    format!("Content-Type {media_type:?} is not allowed"),
                )
                .into());
            }
            Some(_) => {}
            None => tracing::debug!(%url, "no Content-Type; the caller must sniff the body"),
        }
        let cap = self.settings.max_body_bytes;
        if let Some(length) = response.content_length()
            && length > cap
        {
            return Err(fail(
                FailureKind::BodyTooLarge,
                format!("Content-Length {length} is over the {cap}-byte cap"),
            )
            .into());
        }
        let body =
            read_body(response, cap, Overflow::Refuse)
                .await
                .map_err(|error| match error {
                    BodyError::TooLarge => fail(
                        FailureKind::BodyTooLarge,
                        format!("body is over the {cap}-byte cap"),
                    ),
                    BodyError::Transfer(kind, detail) => {
                        fail(kind, format!("reading the body: {detail}"))
                    }
                })?;
        Ok(Step::Done(FetchOutcome::Fetched {
            final_url: url.to_string(),
            http_status: code,
            content_type,
            body,
        }))
    }

    /// Fetches and interprets robots.txt for `page`'s origin.
    async fn fetch_robots(&self, page: &Url) -> RobotsPolicy {
        bump(&self.counters.robots_fetches, 1);
        let unavailable = |reason: String| RobotsPolicy::Blocked {
            kind: FailureKind::RobotsUnavailable,
            reason,
        };
        let mut target = robots::robots_url(page);
        for hop in 0..=MAX_ROBOTS_REDIRECTS {
            if let Err(failure) = address::check_url(&target, self.settings.allow_loopback) {
                return unavailable(format!("robots.txt unavailable: {}", failure.message));
            }
            let host = target.host_str().unwrap_or_default().to_owned();
            let (response, _permit) = match self
                .send(&target, &host, HeaderValue::from_static("text/plain"))
                .await
            {
                Ok(sent) => sent,
                // The page's own host resolving to a refused address is reported as such.
                Err(failure) if hop == 0 && failure.kind == FailureKind::PrivateAddress => {
                    return RobotsPolicy::Blocked {
                        kind: FailureKind::PrivateAddress,
                        reason: failure.message,
                    };
                }
                Err(failure) => {
                    return unavailable(format!("robots.txt unavailable: {}", failure.message));
                }
            };
            let status = response.status();
            tracing::debug!(robots_url = %target, %status, "robots.txt answered");
            if status.is_redirection() {
                match redirect_target(&target, &response) {
                    Some(next) => {
                        target = next;
                        continue;
                    }
                    None => {
                        return unavailable(format!(
                            "{target} answered {status} without a usable Location"
                        ));
                    }
                }
            }
            if status.is_success() {
                return match read_body(response, MAX_ROBOTS_BYTES, Overflow::Truncate).await {
                    Ok(body) => RobotsPolicy::parse(&target, &self.settings.robots_agent, &body),
                    Err(BodyError::Transfer(_, detail)) => {
                        unavailable(format!("{target} could not be read: {detail}"))
                    }
                    // Not returned when truncating.
                    Err(BodyError::TooLarge) => unavailable(format!("{target} is too large")),
                };
            }
            if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                return RobotsPolicy::AllowAll;
            }
            return unavailable(format!("{target} answered {status}"));
        }
        tracing::debug!(robots_url = %target, "more than {MAX_ROBOTS_REDIRECTS} robots.txt redirects; no rules");
        RobotsPolicy::AllowAll
    }
}

/// The absolute URL a redirect response points to, if its `Location` is usable.
fn redirect_target(base: &Url, response: &Response) -> Option<Url> {
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    base.join(location.trim()).ok()
}
