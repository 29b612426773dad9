//! robots.txt policies, cached per origin for the life of a [`Fetcher`](super::Fetcher).
//!
//! Fetched robots.txt files are interpreted as Google and RFC 9309 describe: a 2xx body is
//! parsed (only its first [`MAX_ROBOTS_BYTES`] bytes); a 4xx other than 429, or more than
//! [`MAX_ROBOTS_REDIRECTS`] redirects, means there are no rules; a 429, a 5xx, a network error
//! or an unparsable file makes the whole origin disallowed for the run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use texting_robots::Robot;
use tokio::sync::OnceCell;
use url::Url;

use super::outcome::{FailureKind, FetchFailure};

/// Bytes of robots.txt that are parsed; the rest is ignored (RFC 9309 asks for at least 500 KiB).
pub(super) const MAX_ROBOTS_BYTES: u64 = 512 * 1024;

/// Redirects followed when fetching robots.txt (RFC 9309 asks for at least five).
pub(super) const MAX_ROBOTS_REDIRECTS: u32 = 5;

/// What robots.txt says for one origin.
#[derive(Debug)]
pub(super) enum RobotsPolicy {
    /// No robots.txt (4xx) or no usable one: everything is allowed.
    AllowAll,
    /// Rules for our agent.
    Rules {
        robots_url: String,
        robot: Box<Robot>,
    },
    /// Nothing may be fetched from the origin in this run.
    Blocked { kind: FailureKind, reason: String },
}

impl RobotsPolicy {
    /// Parses a robots.txt body for `agent`; an unparsable file blocks the origin.
    pub(super) fn parse(robots_url: &Url, agent: &str, body: &[u8]) -> Self {
        match Robot::new(agent, body) {
            Ok(robot) => Self::Rules {
                robots_url: robots_url.to_string(),
                robot: Box::new(robot),
            },
            Err(error) => Self::Blocked {
                kind: FailureKind::RobotsUnavailable,
                reason: format!("{robots_url} could not be parsed: {error:#}"),
            },
        }
    }

    /// Whether `url` may be fetched.
    pub(super) fn check(&self, url: &Url, agent: &str) -> Result<(), FetchFailure> {
        match self {
            Self::AllowAll => Ok(()),
            Self::Rules { robots_url, robot } => {
                if robot.allowed(url.as_str()) {
                    Ok(())
                } else {
                    Err(FetchFailure::new(
                        FailureKind::RobotsDisallowed,
                        format!("{url}: disallowed for agent {agent:?} by {robots_url}"),
                    ))
                }
            }
            Self::Blocked { kind, reason } => {
                Err(FetchFailure::new(*kind, format!("{url}: {reason}")))
            }
        }
    }
}

/// One policy per origin (scheme, host and port), each fetched once even when many tasks ask
/// at the same time. Entries live as long as the cache, i.e. one run.
#[derive(Debug, Default)]
pub(super) struct RobotsCache {
    origins: Mutex<HashMap<String, Arc<OnceCell<RobotsPolicy>>>>,
}

impl RobotsCache {
    /// The (possibly not yet filled) cache cell for `url`'s origin.
    pub(super) fn cell(&self, url: &Url) -> Arc<OnceCell<RobotsPolicy>> {
        let origin = url.origin().ascii_serialization();
        let mut origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(origins.entry(origin).or_default())
    }
}

/// The robots.txt URL for `url`'s origin.
pub(super) fn robots_url(url: &Url) -> Url {
    let mut robots = url.clone();
    robots.set_path("/robots.txt");
    robots.set_query(None);
    robots.set_fragment(None);
    // Only fails for URLs that cannot have credentials, which http(s) URLs with a host can.
    let _ = robots.set_username("");
    let _ = robots.set_password(None);
    robots
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).expect("url")
    }

    #[test]
    fn robots_url_keeps_only_the_origin() {
        assert_eq!(
            robots_url(&url("https://user:pw@example.com:8443/a/b.png?x=1#f")).as_str(),
            "https://example.com:8443/robots.txt"
        );
    }

    #[test]
    fn rules_for_our_agent_and_for_all() {
        let body = b"User-agent: *\nDisallow: /private/\n\nUser-agent: imagebert-pipeline\nDisallow: /no-ai/\n";
        let policy = RobotsPolicy::parse(
            &url("http://example.com/robots.txt"),
            "imagebert-pipeline",
            body,
        );
        let check = |u: &str| {
            policy
                .check(&url(u), "imagebert-pipeline")
                .map_err(|f| f.kind)
        };
        assert_eq!(
            check("http://example.com/no-ai/cat.png"),
            Err(FailureKind::RobotsDisallowed)
        );
        // Our own group replaces the `*` group.
        assert_eq!(check("http://example.com/private/cat.png"), Ok(()));
        assert_eq!(check("http://example.com/cat.png"), Ok(()));

        let other = RobotsPolicy::parse(&url("http://example.com/robots.txt"), "otherbot", body);
        assert!(
            other
                .check(&url("http://example.com/private/x"), "otherbot")
                .is_err()
        );
    }

    #[test]
    fn blocked_policy_names_the_url() {
        let policy = RobotsPolicy::Blocked {
            kind: FailureKind::RobotsUnavailable,
            reason: "robots.txt answered 503".to_owned(),
        };
        let failure = policy
            .check(&url("http://example.com/a.png"), "x")
            .expect_err("blocked");
        assert_eq!(failure.kind, FailureKind::RobotsUnavailable);
        assert!(failure.message.contains("http://example.com/a.png"));
    }
}
