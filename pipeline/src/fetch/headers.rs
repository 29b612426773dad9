//! Reading the response headers the fetcher acts on: `X-Robots-Tag`, `Retry-After` and
//! `Content-Type`.

use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};

/// Directives of `X-Robots-Tag` that opt a resource out of AI training.
const AI_OPT_OUT: [&str; 2] = ["noai", "noimageai"];

/// Returns the first `X-Robots-Tag` value that opts out of AI use, if any.
///
/// Only the `noai` and `noimageai` directives count (case-insensitively); other directives such
/// as `none`, `noindex` or `noimageindex` are about search engines and are not treated as an
/// opt-out. A value may hold a comma-separated list and may be scoped to a user agent
/// (`googlebot: noimageai`); the opt-out is honoured whatever agent it names, because it states
/// the publisher's wish about AI use rather than about one crawler.
pub(super) fn ai_opt_out(headers: &HeaderMap) -> Option<String> {
    headers.get_all("x-robots-tag").iter().find_map(|value| {
        let value = String::from_utf8_lossy(value.as_bytes());
        let opted_out = value
            .split(|c: char| c == ',' || c == ':' || c == ';' || c.is_whitespace())
            .any(|token| {
                AI_OPT_OUT
                    .iter()
                    .any(|directive| token.eq_ignore_ascii_case(directive))
            });
        opted_out.then(|| value.into_owned())
    })
}

/// The wait a `Retry-After` header asks for, as delta-seconds or an HTTP date (a date in the
/// past gives zero); `None` when absent or unparsable.
pub(super) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The media type of `Content-Type`, lowercased and without parameters: `Ok(None)` when the
/// header is absent, `Err` with the raw value when it is not readable text.
pub(super) fn media_type(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| String::from_utf8_lossy(value.as_bytes()).into_owned())?;
    let essence = text.split(';').next().unwrap_or_default().trim();
    Ok(Some(essence.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(name: &'static str, values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn x_robots_tag_opt_out() {
        let opted_out =
            |values: &[&'static str]| ai_opt_out(&headers("x-robots-tag", values)).is_some();
        assert!(opted_out(&["noai"]));
        assert!(opted_out(&["NoImageAI"]));
        assert!(opted_out(&["noindex, noai"]));
        assert!(opted_out(&["noindex,noimageai"]));
        assert!(opted_out(&["googlebot: noimageai"]));
        assert!(opted_out(&["otherbot: noindex, nofollow", "noai"]));
        assert!(!opted_out(&[]));
        assert!(!opted_out(&["none"]));
        assert!(!opted_out(&["noindex, nofollow, noimageindex"]));
        assert!(!opted_out(&["unavailable_after: 25 Jun 2010 15:00:00 PST"]));
        assert!(!opted_out(&["noaix"]));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 21 Oct 2015 07:28:00
        let parse = |value: &'static str| retry_after(&headers("retry-after", &[value]), now);
        assert_eq!(parse("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse("Wed, 21 Oct 2015 07:28:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse("soon"), None);
        assert_eq!(parse("-1"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn media_type_essence() {
        let parse = |value: &'static str| media_type(&headers("content-type", &[value]));
        assert_eq!(parse("image/png"), Ok(Some("image/png".to_owned())));
        assert_eq!(
            parse("Image/JPEG; charset=binary"),
            Ok(Some("image/jpeg".to_owned()))
        );
        assert_eq!(media_type(&HeaderMap::new()), Ok(None));
    }
}
