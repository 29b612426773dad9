//! Where this process sits in a job started by an existing scheduler (a Kubernetes Indexed Job, a
//! Slurm job array): which slice of the work it owns. Every stage that splits shards among
//! independent processes (`pipeline ingest`, `pipeline dedup`, `detector extract`) reads it the
//! same way, from `--shard-index/--num-shards` or the scheduler's environment.

use anyhow::{Context, Result, bail};

/// This process's slice of the work: index `index` of `count`.
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
    fn shard_numbers_split_round_robin() {
        let slices: Vec<Slice> = (0..3).map(|i| Slice::new(i, 3).unwrap()).collect();
        for number in 0..30u64 {
            let owners: Vec<u32> = slices
                .iter()
                .filter(|s| s.owns_number(number))
                .map(|s| s.index)
                .collect();
            assert_eq!(owners, vec![(number % 3) as u32]);
        }
        assert!((0..10).all(|n| Slice::WHOLE.owns_number(n)));
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
