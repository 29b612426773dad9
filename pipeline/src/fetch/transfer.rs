//! Low-level transfer helpers: reading a capped body and classifying reqwest errors.

use std::error::Error as StdError;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::Response;

use super::address;
use super::outcome::FailureKind;

/// What to do when a body grows past its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Overflow {
    /// Fail with [`BodyError::TooLarge`].
    Refuse,
    /// Keep the first `cap` bytes and stop reading.
    Truncate,
}

/// Why a body could not be read.
#[derive(Debug)]
pub(super) enum BodyError {
    /// More than the cap (only with [`Overflow::Refuse`]).
    TooLarge,
    /// The stream failed: the kind (timeout or truncated body) and a description.
    Transfer(FailureKind, String),
}

/// Reads `response`'s body as a stream, never holding more than `cap` bytes.
pub(super) async fn read_body(
    response: Response,
    cap: u64,
    overflow: Overflow,
) -> Result<Bytes, BodyError> {
    let expected = response.content_length();
    let capacity = expected.unwrap_or(0).min(cap).min(1 << 20);
    let mut body = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            let kind = match classify(&error) {
                FailureKind::Timeout => FailureKind::Timeout,
                _ => FailureKind::TruncatedBody,
            };
            BodyError::Transfer(kind, error_chain(&error))
        })?;
        let room = usize::try_from(cap.saturating_sub(body.len() as u64)).unwrap_or(usize::MAX);
        if chunk.len() > room {
            match overflow {
                Overflow::Refuse => return Err(BodyError::TooLarge),
                Overflow::Truncate => {
                    body.extend_from_slice(&chunk[..room]);
                    return Ok(body.freeze());
                }
            }
        }
        body.extend_from_slice(&chunk);
    }
    if let Some(expected) = expected
        && expected != body.len() as u64
    {
        return Err(BodyError::Transfer(
            FailureKind::TruncatedBody,
            format!(
                "body has {} bytes, Content-Length said {expected}",
                body.len()
            ),
        ));
    }
    Ok(body.freeze())
}

/// The failure kind of a reqwest error.
pub(super) fn classify(error: &reqwest::Error) -> FailureKind {
    if address::find_blocked(error).is_some() {
        FailureKind::PrivateAddress
    } else if error.is_timeout() {
        FailureKind::Timeout
    } else if error.is_connect() {
        FailureKind::Connect
    } else if error.is_body() || error.is_decode() {
        FailureKind::TruncatedBody
    } else {
        FailureKind::Network
    }
}

/// `error` and all its sources, joined with `: `.
pub(super) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(error) = source {
        let part = error.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = error.source();
    }
    text
}
