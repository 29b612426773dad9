//! Splitting the input across processes by registrable domain.
//!
//! Beyond one machine, `pipeline ingest` runs as N independent processes started by an existing
//! scheduler (a Kubernetes Indexed Job, a Slurm job array). Each process takes the candidates whose
//! image URL's registrable domain (`images.example.co.uk` -> `example.co.uk`, by the public suffix
//! list) hashes to its index, so every host is crawled by exactly one process and per-host
//! politeness (robots.txt, rate limit) holds across the whole job. The hash is SHA-256, fixed across
//! platforms and releases, so a rerun assigns every row to the same process and the same shard.

use sha2::{Digest, Sha256};
use url::Url;

pub use cluster::Slice;

/// Whether the candidate with image URL `url` belongs to `slice`.
pub fn owns(slice: Slice, url: &str) -> bool {
    slice.count == 1 || slice_of(url, slice.count) == slice.index
}

/// The registrable domain of `url`'s host (`a.b.example.co.uk` -> `example.co.uk`); an IP address
/// or a host without a public suffix is its own domain. `None` when `url` has no host.
pub fn registrable_domain(url: &str) -> Option<String> {
    let parsed = Url::parse(url).ok()?;
    let host = parsed
        .host_str()?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if parsed
        .host()
        .is_some_and(|h| !matches!(h, url::Host::Domain(_)))
    {
        return Some(host);
    }
    let domain = psl::domain_str(&host).unwrap_or(&host).to_owned();
    Some(domain)
}

/// Which of `count` slices the candidate with image URL `url` goes to. URLs that don't parse go
/// by their whole text, so they are still accounted for by exactly one process.
pub fn slice_of(url: &str, count: u32) -> u32 {
    let domain = registrable_domain(url);
    let digest = Sha256::digest(domain.as_deref().unwrap_or(url).as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(head) % u64::from(count.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrable_domains_follow_the_public_suffix_list() {
        assert_eq!(
            registrable_domain("https://a.b.example.co.uk/x.jpg").as_deref(),
            Some("example.co.uk")
        );
        assert_eq!(
            registrable_domain("http://img.Example.COM./x.jpg").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            registrable_domain("http://127.0.0.1:8080/a.png").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(registrable_domain("not a url"), None);
    }

    #[test]
    fn one_domain_goes_to_one_slice_and_every_url_to_exactly_one() {
        let urls: Vec<String> = (0..500)
            .map(|i| format!("https://cdn{}.site{}.org/p/{i}.jpg", i % 3, i % 37))
            .collect();
        for count in [1, 2, 3, 7] {
            let slices: Vec<Slice> = (0..count).map(|i| Slice::new(i, count).unwrap()).collect();
            for url in &urls {
                assert_eq!(slices.iter().filter(|s| owns(**s, url)).count(), 1, "{url}");
            }
            let a = slice_of("https://cdn0.site5.org/a.jpg", count);
            assert_eq!(a, slice_of("https://cdn2.site5.org/zzz.png", count));
        }
        let per_slice: Vec<usize> = (0..3)
            .map(|i| urls.iter().filter(|u| slice_of(u, 3) == i).count())
            .collect();
        assert!(per_slice.iter().all(|&n| n > 0), "{per_slice:?}");
    }
}
