//! Splitting the input across processes by registrable domain.
//!
//! Beyond one machine, `pipeline ingest` runs as N independent processes started by an existing
//! scheduler (a Kubernetes Indexed Job, a Slurm job array). Each process takes the candidates whose
//! image URL's registrable domain (`images.example.co.uk` -> `example.co.uk`, by the public suffix
//! list) hashes to its index, so every host is crawled by exactly one process and per-host
//! politeness (robots.txt, rate limit) holds across the whole job. The hash is SHA-256, fixed across
//! platforms and releases, so a rerun assigns every row to the same process and the same shard.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use url::Url;

/// This process's slice of the input: index `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// 0-based index of this process.
    pub index: u32,
    /// Number of processes sharing the input.
    pub count: u32,
}

impl Slice {
    /// The whole input in one process.
    pub const WHOLE: Slice = Slice { index: 0, count: 1 };

    /// A checked slice: `count >= 1` and `index < count`.
    pub fn new(index: u32, count: u32) -> Result<Self> {
        if count == 0 {
            bail!("--num-shards must be at least 1");
        }
        if index >= count {
            bail!("--shard-index {index} is out of range for --num-shards {count}");
        }
        Ok(Self { index, count })
    }

    /// The slice from explicit values or, where one is missing, from the scheduler's environment:
    /// Kubernetes Indexed Jobs set `JOB_COMPLETION_INDEX` (the count comes from
    /// `IMAGEBERT_NUM_SHARDS`, set in the manifest to the Job's `completions`); Slurm job arrays set
    /// `SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_MIN` and `SLURM_ARRAY_TASK_COUNT`. Without any of
    /// them: the whole input.
    pub fn from_args_or_env(index: Option<u32>, count: Option<u32>) -> Result<Self> {
        Self::resolve(index, count, |name| std::env::var(name).ok())
    }

    /// [`Slice::from_args_or_env`] with the environment given as a lookup function (for tests).
    pub fn resolve(
        index: Option<u32>,
        count: Option<u32>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let number = |name: &str| -> Result<Option<u32>> {
            env(name)
                .map(|value| {
                    value.trim().parse::<u32>().with_context(|| {
                        format!("environment variable {name}={value:?} is not a number")
                    })
                })
                .transpose()
        };
        let (env_index, env_count) = if let Some(task) = number("SLURM_ARRAY_TASK_ID")? {
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = task.checked_sub(min).with_context(|| {
                format!("SLURM_ARRAY_TASK_ID {task} is below SLURM_ARRAY_TASK_MIN {min}")
            })?;
            (Some(index), number("SLURM_ARRAY_TASK_COUNT")?)
        } else {
            (
                number("JOB_COMPLETION_INDEX")?,
                number("IMAGEBERT_NUM_SHARDS")?,
            )
        };
        let index = index.or(env_index);
        let count = count.or(env_count);
        match (index, count) {
            (None, None) => Ok(Self::WHOLE),
            (Some(_), None) => bail!(
                "a shard index is set but not the number of shards: pass --num-shards (or set \
                 IMAGEBERT_NUM_SHARDS / SLURM_ARRAY_TASK_COUNT)"
            ),
            (None, Some(1)) => Ok(Self::WHOLE),
            (None, Some(_)) => bail!(
                "the number of shards is set but not this process's index: pass --shard-index (or \
                 run under JOB_COMPLETION_INDEX / SLURM_ARRAY_TASK_ID)"
            ),
            (Some(index), Some(count)) => Self::new(index, count),
        }
    }

    /// Whether shard number `number` (numbered `seq * count + index` by ingest) belongs to this
    /// slice, for stages that split finished shards among processes.
    pub fn owns_number(&self, number: u64) -> bool {
        number % u64::from(self.count) == u64::from(self.index)
    }

    /// Whether the candidate with image URL `url` belongs to this slice.
    pub fn owns(&self, url: &str) -> bool {
        self.count == 1 || slice_of(url, self.count) == self.index
    }
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

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

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
                assert_eq!(slices.iter().filter(|s| s.owns(url)).count(), 1, "{url}");
            }
            let a = slice_of("https://cdn0.site5.org/a.jpg", count);
            assert_eq!(a, slice_of("https://cdn2.site5.org/zzz.png", count));
        }
        let per_slice: Vec<usize> = (0..3)
            .map(|i| urls.iter().filter(|u| slice_of(u, 3) == i).count())
            .collect();
        assert!(per_slice.iter().all(|&n| n > 0), "{per_slice:?}");
    }

    #[test]
    fn slices_come_from_flags_then_kubernetes_then_slurm() {
        assert_eq!(Slice::resolve(None, None, env(&[])).unwrap(), Slice::WHOLE);
        assert_eq!(
            Slice::resolve(Some(1), Some(4), env(&[("JOB_COMPLETION_INDEX", "3")])).unwrap(),
            Slice { index: 1, count: 4 }
        );
        assert_eq!(
            Slice::resolve(
                None,
                None,
                env(&[("JOB_COMPLETION_INDEX", "2"), ("IMAGEBERT_NUM_SHARDS", "5")])
            )
            .unwrap(),
            Slice { index: 2, count: 5 }
        );
        assert_eq!(
            Slice::resolve(
                None,
                None,
                env(&[
                    ("SLURM_ARRAY_TASK_ID", "11"),
                    ("SLURM_ARRAY_TASK_MIN", "10"),
                    ("SLURM_ARRAY_TASK_COUNT", "3")
                ])
            )
            .unwrap(),
            Slice { index: 1, count: 3 }
        );
        let error = Slice::resolve(None, None, env(&[("JOB_COMPLETION_INDEX", "2")])).unwrap_err();
        assert!(error.to_string().contains("--num-shards"), "{error}");
        let error = Slice::resolve(Some(3), Some(3), env(&[])).unwrap_err();
        assert!(error.to_string().contains("out of range"), "{error}");
        let error = Slice::resolve(None, None, env(&[("JOB_COMPLETION_INDEX", "x")])).unwrap_err();
        assert!(
            error.to_string().contains("JOB_COMPLETION_INDEX"),
            "{error}"
        );
    }
}
