//! [`FetchConfig`]: the fetcher's settings, and their validation.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use reqwest::header::HeaderValue;
use serde::Deserialize;

/// Settings of a [`Fetcher`](super::Fetcher).
///
/// Deserializes from any serde format; every field is optional (missing fields take the
/// defaults documented on them) and unknown fields are an error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    /// `User-Agent` sent with every request, as `product/version`. Its product token (the text
    /// before the first `/` or space) is also the agent name looked up in robots.txt groups.
    /// Default: `imagebert-pipeline/<crate version>`.
    pub user_agent: String,
    /// Contact for site operators (an e-mail address or a URL describing the crawl), appended
    /// to the User-Agent as ` (+CONTACT)`. Default: none.
    pub contact: Option<String>,
    /// Limit on establishing one TCP (and TLS) connection, in seconds. Default: `10`.
    pub connect_timeout_s: f64,
    /// Limit on one HTTP request from sending it to the end of its body, in seconds; it applies
    /// to each attempt and each redirect hop separately. Default: `30`.
    pub timeout_s: f64,
    /// Largest response body accepted, in bytes. A larger `Content-Length` is refused before
    /// the body is read, and a body without one is abandoned as soon as it grows past the cap.
    /// Default: `16777216` (16 MiB).
    pub max_body_bytes: u64,
    /// Most redirects followed for one fetch; each hop is checked again (scheme, address,
    /// robots.txt, rate limit). Default: `5`.
    pub max_redirects: u32,
    /// Most retries of one request after a transient failure (timeout, connection error,
    /// truncated body, 429 or 5xx), so a request is sent at most `max_retries + 1` times.
    /// Default: `3`.
    pub max_retries: u32,
    /// Delay before the first retry, in milliseconds; it doubles with each further retry and
    /// never exceeds `max_retry_after_s`. A `Retry-After` header lengthens it. At most one day.
    /// Default: `500`.
    pub backoff_base_ms: u64,
    /// Longest `Retry-After` (seconds or HTTP date) the fetcher waits for. A response asking for
    /// a longer wait is not retried: it fails at once (still transient), and the host stays
    /// deferred for up to this cap. At most one day. Default: `60`.
    pub max_retry_after_s: u64,
    /// Least time between the starts of two requests to one host (robots.txt, retries and
    /// redirect hops included), in milliseconds. At most one day. Default: `1000`.
    pub per_host_interval_ms: u64,
    /// Most HTTP requests in flight at once across all tasks sharing the fetcher. Default: `64`
    /// (img2dataset's order of magnitude per process; the per-host interval keeps each host
    /// polite however high this is).
    pub max_concurrency: usize,
    /// Accepted `Content-Type` media types (compared without parameters, case-insensitively);
    /// each must be an `image/` type. A response without a `Content-Type` is accepted and
    /// reported as such (the caller sniffs the bytes). Default: `["image/jpeg", "image/png",
    /// "image/webp", "image/gif", "image/bmp"]`.
    pub allowed_content_types: Vec<String>,
    /// Whether robots.txt is fetched (once per origin and run) and obeyed. Default: `true`.
    pub respect_robots: bool,
    /// For tests only: also allow loopback addresses (127.0.0.0/8 and ::1), so that a test
    /// server on this machine can be fetched. Every other private or reserved range stays
    /// refused. Default: `false`.
    pub allow_loopback: bool,
    /// Hosts the crawl may fetch from (a name also admits its subdomains; IPv4 addresses match
    /// exactly; ports are ignored). A URL or redirect to any other host is refused before any
    /// request and its pair dropped as `host_not_allowed`. Empty: every public host. Default:
    /// `[]`.
    pub allowed_hosts: Vec<String>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            user_agent: concat!("imagebert-pipeline/", env!("CARGO_PKG_VERSION")).to_owned(),
            contact: None,
            connect_timeout_s: 10.0,
            timeout_s: 30.0,
            max_body_bytes: 16 * 1024 * 1024,
            max_redirects: 5,
            max_retries: 3,
            backoff_base_ms: 500,
            max_retry_after_s: 60,
            per_host_interval_ms: 1000,
            max_concurrency: 64,
            allowed_content_types: [
                "image/jpeg",
                "image/png",
                "image/webp",
                "image/gif",
                "image/bmp",
            ]
            .map(str::to_owned)
            .to_vec(),
            respect_robots: true,
            allow_loopback: false,
            allowed_hosts: Vec::new(),
        }
    }
}

/// Longest configurable delay (backoff base, per-host interval, Retry-After cap): one day.
const MAX_DELAY_S: u64 = 24 * 60 * 60;

/// A validated [`FetchConfig`] in the forms the fetcher uses.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) user_agent: HeaderValue,
    pub(super) robots_agent: String,
    pub(super) accept: HeaderValue,
    pub(super) connect_timeout: Duration,
    pub(super) timeout: Duration,
    pub(super) max_body_bytes: u64,
    pub(super) max_redirects: u32,
    pub(super) max_retries: u32,
    pub(super) backoff_base: Duration,
    pub(super) max_retry_after: Duration,
    pub(super) per_host_interval: Duration,
    pub(super) max_concurrency: usize,
    pub(super) allowed_content_types: Vec<String>,
    pub(super) respect_robots: bool,
    pub(super) allow_loopback: bool,
    pub(super) allowed_hosts: Vec<String>,
}

impl FetchConfig {
    /// Checks the values and converts them.
    pub(super) fn validate(&self) -> anyhow::Result<Settings> {
        let product = self.user_agent.split(['/', ' ']).next().unwrap_or_default();
        ensure!(
            !product.is_empty(),
            "fetch.user_agent {:?} must start with a product token",
            self.user_agent
        );
        let user_agent = match &self.contact {
            Some(contact) => format!("{} (+{contact})", self.user_agent),
            None => self.user_agent.clone(),
        };
        let user_agent = HeaderValue::from_str(&user_agent).with_context(|| {
            format!("fetch.user_agent {user_agent:?} is not a valid header value")
        })?;

        ensure!(
            self.max_body_bytes > 0,
            "fetch.max_body_bytes must be positive"
        );
        ensure!(
            self.backoff_base_ms <= MAX_DELAY_S * 1000,
            "fetch.backoff_base_ms must be at most {MAX_DELAY_S} s"
        );
        ensure!(
            self.per_host_interval_ms <= MAX_DELAY_S * 1000,
            "fetch.per_host_interval_ms must be at most {MAX_DELAY_S} s"
        );
        ensure!(
            self.max_retry_after_s <= MAX_DELAY_S,
            "fetch.max_retry_after_s must be at most {MAX_DELAY_S} s"
        );
        ensure!(
            self.max_concurrency > 0,
            "fetch.max_concurrency must be positive"
        );
        ensure!(
            !self.allowed_content_types.is_empty(),
            "fetch.allowed_content_types must not be empty"
        );
        let mut allowed_content_types = Vec::with_capacity(self.allowed_content_types.len());
        for media_type in &self.allowed_content_types {
            let media_type = media_type.trim().to_ascii_lowercase();
            let subtype = media_type.strip_prefix("image/").unwrap_or_default();
            if subtype.is_empty() || subtype.contains([';', ',', ' ', '/']) {
                bail!(
                    "fetch.allowed_content_types entry {media_type:?} is not an image/ media type"
                );
            }
            allowed_content_types.push(media_type);
        }
        let mut allowed_hosts = Vec::with_capacity(self.allowed_hosts.len());
        for host in &self.allowed_hosts {
            let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
            if host.is_empty() || host.contains(['/', ':', ' ', '*']) {
                bail!("fetch.allowed_hosts entry {host:?} is not a host name or IPv4 address");
            }
            allowed_hosts.push(host);
        }
        let accept = HeaderValue::from_str(&allowed_content_types.join(", "))
            .context("fetch.allowed_content_types do not form a valid Accept header")?;

        Ok(Settings {
            user_agent,
            robots_agent: product.to_owned(),
            accept,
            connect_timeout: seconds("fetch.connect_timeout_s", self.connect_timeout_s)?,
            timeout: seconds("fetch.timeout_s", self.timeout_s)?,
            max_body_bytes: self.max_body_bytes,
            max_redirects: self.max_redirects,
            max_retries: self.max_retries,
            backoff_base: Duration::from_millis(self.backoff_base_ms),
            max_retry_after: Duration::from_secs(self.max_retry_after_s),
            per_host_interval: Duration::from_millis(self.per_host_interval_ms),
            max_concurrency: self.max_concurrency,
            allowed_content_types,
            respect_robots: self.respect_robots,
            allow_loopback: self.allow_loopback,
            allowed_hosts,
        })
    }
}

impl Settings {
    /// Whether `host` (lower case, as a URL gives it) is within `allowed_hosts`.
    pub(super) fn host_allowed(&self, host: &str) -> bool {
        self.allowed_hosts.is_empty()
            || self.allowed_hosts.iter().any(|allowed| {
                host == allowed
                    || host
                        .strip_suffix(allowed.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            })
    }
}

/// A positive, finite number of seconds as a [`Duration`].
fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    let duration = Duration::try_from_secs_f64(value)
        .with_context(|| format!("{name} = {value} is not a valid number of seconds"))?;
    ensure!(!duration.is_zero(), "{name} must be positive");
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let settings = FetchConfig::default()
            .validate()
            .expect("defaults are valid");
        assert_eq!(settings.robots_agent, "imagebert-pipeline");
        assert_eq!(
            settings.accept,
            "image/jpeg, image/png, image/webp, image/gif, image/bmp"
        );
        assert_eq!(settings.max_body_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn allowed_hosts_admit_their_subdomains_only() {
        let settings = FetchConfig {
            allowed_hosts: vec!["Example.org.".to_owned(), "127.0.0.1".to_owned()],
            ..FetchConfig::default()
        }
        .validate()
        .expect("valid");
        for host in ["example.org", "img.example.org", "127.0.0.1"] {
            assert!(settings.host_allowed(host), "{host}");
        }
        for host in [
            "badexample.org",
            "example.org.evil.net",
            "127.0.0.10",
            "org",
        ] {
            assert!(!settings.host_allowed(host), "{host}");
        }
        let open = FetchConfig::default().validate().expect("valid");
        assert!(open.host_allowed("anything.example"));
    }

    #[test]
    fn contact_is_appended() {
        let config = FetchConfig {
            contact: Some("ops@example.org".to_owned()),
            ..FetchConfig::default()
        };
        let settings = config.validate().expect("valid");
        let ua = settings.user_agent.to_str().expect("ascii");
        assert!(ua.starts_with("imagebert-pipeline/"), "{ua}");
        assert!(ua.ends_with(" (+ops@example.org)"), "{ua}");
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = [
            FetchConfig {
                timeout_s: 0.0,
                ..FetchConfig::default()
            },
            FetchConfig {
                connect_timeout_s: f64::NAN,
                ..FetchConfig::default()
            },
            FetchConfig {
                timeout_s: -1.0,
                ..FetchConfig::default()
            },
            FetchConfig {
                max_body_bytes: 0,
                ..FetchConfig::default()
            },
            FetchConfig {
                max_concurrency: 0,
                ..FetchConfig::default()
            },
            FetchConfig {
                per_host_interval_ms: u64::MAX,
                ..FetchConfig::default()
            },
            FetchConfig {
                max_retry_after_s: u64::MAX,
                ..FetchConfig::default()
            },
            FetchConfig {
                backoff_base_ms: u64::MAX,
                ..FetchConfig::default()
            },
            FetchConfig {
                allowed_content_types: vec![],
                ..FetchConfig::default()
            },
            FetchConfig {
                allowed_hosts: vec!["http://example.org".to_owned()],
                ..FetchConfig::default()
            },
            FetchConfig {
                allowed_content_types: vec!["text/html".to_owned()],
                ..FetchConfig::default()
            },
            FetchConfig {
                user_agent: "/1.0".to_owned(),
                ..FetchConfig::default()
            },
            FetchConfig {
                user_agent: "bad\nagent".to_owned(),
                ..FetchConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?} should be refused");
        }
    }
}
