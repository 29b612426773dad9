//! What a fetch returns: [`FetchOutcome`], [`FetchFailure`] and [`FailureKind`].

use std::fmt;

use bytes::Bytes;

/// The result of [`Fetcher::fetch`](super::Fetcher::fetch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The image bytes were downloaded.
    Fetched {
        /// URL the body came from, after redirects.
        final_url: String,
        /// HTTP status of the final response (a 2xx).
        http_status: u16,
        /// Media type of the body from `Content-Type`, lowercased and without parameters
        /// (e.g. `image/png`); `None` when the server sent none, so the caller must sniff it.
        content_type: Option<String>,
        /// The complete body, at most `max_body_bytes` long.
        body: Bytes,
    },
    /// Nothing usable was downloaded.
    Failed(FetchFailure),
}

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct FetchFailure {
    /// Category, with a stable code for counting and storing.
    pub kind: FailureKind,
    /// HTTP status of the response that caused the failure, if one was received.
    pub http_status: Option<u16>,
    /// Human-readable details; names the URL.
    pub message: String,
}

impl FetchFailure {
    /// A failure without an HTTP status.
    pub(super) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            http_status: None,
            message: message.into(),
        }
    }

    /// A failure caused by a response with `status`.
    pub(super) fn with_status(kind: FailureKind, status: u16, message: impl Into<String>) -> Self {
        Self {
            kind,
            http_status: Some(status),
            message: message.into(),
        }
    }
}

/// Category of a [`FetchFailure`].
///
/// [`code`](Self::code) gives each a stable machine-readable name, and
/// [`is_transient`](Self::is_transient) says whether trying again later may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The URL could not be parsed or has no host (`bad_url`).
    BadUrl,
    /// The URL, or a redirect, uses a scheme other than http or https (`bad_scheme`).
    BadScheme,
    /// The host is, or resolves only to, a private, loopback, link-local, multicast or otherwise
    /// non-public address (`private_address`).
    PrivateAddress,
    /// The host is not in `fetch.allowed_hosts` (`host_not_allowed`).
    HostNotAllowed,
    /// robots.txt disallows the URL for our agent (`robots_disallowed`).
    RobotsDisallowed,
    /// robots.txt could not be fetched (5xx, 429, network error) or parsed, so the whole origin
    /// is treated as disallowed for this run (`robots_unavailable`).
    RobotsUnavailable,
    /// The response carried `X-Robots-Tag: noai` or `noimageai` (`noai_header`).
    NoAiHeader,
    /// More redirects than `max_redirects`, or a redirect loop (`too_many_redirects`).
    TooManyRedirects,
    /// A redirect without a usable `Location` header (`bad_redirect`).
    BadRedirect,
    /// A 4xx status other than 429 (`http_4xx`); the status is in
    /// [`FetchFailure::http_status`].
    HttpClientError,
    /// A 5xx status, after retries (`http_5xx`); the status is in [`FetchFailure::http_status`].
    HttpServerError,
    /// A 429 Too Many Requests, after retries or with a `Retry-After` beyond the cap
    /// (`rate_limited`).
    RateLimited,
    /// A status that is neither an error nor usable, e.g. 204 or a 1xx (`unexpected_status`).
    UnexpectedStatus,
    /// Connecting, or the whole request, took longer than its timeout (`timeout`).
    Timeout,
    /// The connection could not be established, or DNS resolution failed (`connect`).
    Connect,
    /// Another transport or protocol error (`network`).
    Network,
    /// The body is larger than `max_body_bytes` (`body_too_large`).
    BodyTooLarge,
    /// The `Content-Type` is not one of the allowed image types (`content_type`).
    ContentType,
    /// The connection ended before the whole body arrived (`truncated_body`).
    TruncatedBody,
}

impl FailureKind {
    /// Stable machine-readable code, e.g. `robots_disallowed`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadUrl => "bad_url",
            Self::BadScheme => "bad_scheme",
            Self::PrivateAddress => "private_address",
            Self::HostNotAllowed => "host_not_allowed",
            Self::RobotsDisallowed => "robots_disallowed",
            Self::RobotsUnavailable => "robots_unavailable",
            Self::NoAiHeader => "noai_header",
            Self::TooManyRedirects => "too_many_redirects",
            Self::BadRedirect => "bad_redirect",
            Self::HttpClientError => "http_4xx",
            Self::HttpServerError => "http_5xx",
            Self::RateLimited => "rate_limited",
            Self::UnexpectedStatus => "unexpected_status",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Network => "network",
            Self::BodyTooLarge => "body_too_large",
            Self::ContentType => "content_type",
            Self::TruncatedBody => "truncated_body",
        }
    }

    /// Whether the same URL may succeed if fetched again later: true for timeouts, connection
    /// and network errors, truncated bodies, 429, 5xx and an unavailable robots.txt; false for
    /// refusals (robots, noai, address, host, scheme), 4xx, oversized bodies and wrong content types.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RobotsUnavailable
                | Self::HttpServerError
                | Self::RateLimited
                | Self::Timeout
                | Self::Connect
                | Self::Network
                | Self::TruncatedBody
        )
    }
}

impl FailureKind {
    /// Whether this is a refusal rather than a failure, by the site (robots.txt, an AI opt-out
    /// header) or by the crawl's own scope (`fetch.allowed_hosts`): such pairs are dropped, not
    /// failed.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::RobotsDisallowed | Self::NoAiHeader | Self::HostNotAllowed
        )
    }
}

impl FetchFailure {
    /// The drop reason stored for this failure: the kind's code, with the exact status for
    /// HTTP errors (`http_404`, `http_503`).
    pub fn reason(&self) -> String {
        match (self.kind, self.http_status) {
            (FailureKind::HttpClientError | FailureKind::HttpServerError, Some(status)) => {
                format!("http_{status}")
            }
            _ => self.kind.code().to_owned(),
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
