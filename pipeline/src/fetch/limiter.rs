//! Per-host politeness: a minimum interval between request starts, and deferral after
//! `Retry-After`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Hosts remembered before idle entries are dropped.
const PRUNE_AT: usize = 4096;

/// Per-host schedule.
#[derive(Debug, Clone, Copy)]
struct HostSlot {
    /// Earliest start of the next reservation (the previous one plus the interval).
    next: Instant,
    /// When the last request actually started.
    last_start: Option<Instant>,
    /// No request starts before this (set from `Retry-After`).
    blocked_until: Instant,
}

impl HostSlot {
    fn new(now: Instant) -> Self {
        Self {
            next: now,
            last_start: None,
            blocked_until: now,
        }
    }

    fn is_idle(&self, now: Instant, interval: Duration) -> bool {
        self.next <= now
            && self.blocked_until <= now
            && self.last_start.is_none_or(|start| start + interval <= now)
    }
}

/// Spaces the starts of requests to each host at least `interval` apart, across all tasks.
///
/// A caller first waits for its turn ([`wait_turn`](Self::wait_turn): it reserves the next
/// free slot for the host and sleeps until then, so waiting callers are served in order), then
/// claims the start with [`try_start`](Self::try_start), which only succeeds if no request to
/// the host started within the interval and no `Retry-After` deferral is in force. Callers
/// that waited for something else in between (a concurrency permit) and lost the race reserve
/// a new turn.
#[derive(Debug)]
pub(super) struct HostLimiter {
    interval: Duration,
    hosts: Mutex<HashMap<String, HostSlot>>,
}

impl HostLimiter {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            interval,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves the next turn for `host` and sleeps until it comes.
    pub(super) async fn wait_turn(&self, host: &str) {
        let start = {
            let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if hosts.len() >= PRUNE_AT && !hosts.contains_key(host) {
                hosts.retain(|_, slot| !slot.is_idle(now, self.interval));
            }
            let slot = hosts
                .entry(host.to_owned())
                .or_insert_with(|| HostSlot::new(now));
            let earliest = slot.last_start.map_or(now, |last| last + self.interval);
            let start = now.max(slot.next).max(slot.blocked_until).max(earliest);
            slot.next = start + self.interval;
            start
        };
        tokio::time::sleep_until(start).await;
    }

    /// Records a request to `host` as started now, if the schedule allows it.
    pub(super) fn try_start(&self, host: &str) -> bool {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let slot = hosts
            .entry(host.to_owned())
            .or_insert_with(|| HostSlot::new(now));
        let spaced = slot
            .last_start
            .is_none_or(|last| last + self.interval <= now);
        if spaced && slot.blocked_until <= now {
            slot.last_start = Some(now);
            true
        } else {
            false
        }
    }

    /// Keeps requests to `host` from starting before `until`.
    pub(super) fn defer(&self, host: &str, until: Instant) {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = hosts
            .entry(host.to_owned())
            .or_insert_with(|| HostSlot::new(Instant::now()));
        slot.blocked_until = slot.blocked_until.max(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl HostLimiter {
        async fn wait(&self, host: &str) {
            loop {
                self.wait_turn(host).await;
                if self.try_start(host) {
                    return;
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn spaces_requests_per_host() {
        let limiter = HostLimiter::new(Duration::from_millis(100));
        let start = Instant::now();
        for _ in 0..3 {
            limiter.wait("a.example").await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        // Another host is not delayed by the first.
        let other = Instant::now();
        limiter.wait("b.example").await;
        assert_eq!(other.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn defer_delays_the_next_request() {
        let limiter = HostLimiter::new(Duration::ZERO);
        let start = Instant::now();
        limiter.wait("a.example").await;
        limiter.defer("a.example", start + Duration::from_secs(2));
        limiter.wait("a.example").await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_missed_turn_cannot_start_right_after_another_request() {
        let limiter = HostLimiter::new(Duration::from_millis(100));
        limiter.wait_turn("a.example").await; // turn at 0
        limiter.wait_turn("a.example").await; // turn at 100 ms, but this caller is held up
        // The first caller only gets going now, e.g. after waiting for a permit.
        assert!(limiter.try_start("a.example"));
        assert!(
            !limiter.try_start("a.example"),
            "too soon after the previous start"
        );
        let before = Instant::now();
        limiter.wait("a.example").await;
        assert!(before.elapsed() >= Duration::from_millis(100));
    }
}
