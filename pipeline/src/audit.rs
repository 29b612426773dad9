//! `pipeline audit`: proves an ingest output accounts for its input: every input row appears in
//! exactly one committed shard, no row appears twice, no shard lacks its stats file and no key is
//! repeated. Run it after a distributed ingest (all slices) or after a crash and resume. It also
//! sums what each filter dropped and each error kind over the whole output.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Context, Result};
use schemas::pair_shard;
use schemas::shard_stats::{ShardStats, stats_file_name};
use serde::Serialize;
use storage::Location;

use crate::ingest::{RUN_FILE, RunSpec};
use crate::inputs::{self, InputConfig, InputKind, InputRow};
use crate::seeds;
use crate::sharding::Slice;

/// Most example rows listed per problem in a report.
const EXAMPLES: usize = 20;

/// The outcome of an audit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    /// Rows read from the inputs (seed lists: their stored expansions).
    pub input_rows: u64,
    /// Rows in committed shards.
    pub output_rows: u64,
    /// Committed shards (with stats).
    pub shards: u64,
    /// Shards without a stats file (an unfinished run; rerun ingest).
    pub uncommitted_shards: Vec<String>,
    /// Input rows found in no shard: count, and up to 20 examples.
    pub missing: (u64, Vec<String>),
    /// Input rows found more than once: count of extra copies, and examples.
    pub duplicated: (u64, Vec<String>),
    /// Output rows that match no input row: count, and examples.
    pub unexpected: (u64, Vec<String>),
    /// Keys used by more than one row.
    pub repeated_keys: u64,
    /// Output rows per status.
    pub counts_by_status: BTreeMap<String, u64>,
    /// Rows per filter that dropped them, summed over the committed shards' stats files.
    pub drop_reasons: BTreeMap<String, u64>,
    /// Rows per error kind (`http_404`, `too_many_pixels`, ...), summed over the stats files.
    pub error_tallies: BTreeMap<String, u64>,
}

impl AuditReport {
    /// Whether the output accounts for every input row exactly once.
    pub fn is_clean(&self) -> bool {
        self.uncommitted_shards.is_empty()
            && self.missing.0 == 0
            && self.duplicated.0 == 0
            && self.unexpected.0 == 0
            && self.repeated_keys == 0
    }
}

/// A row's identity across input and output: input file, row or record offset, image URL.
type RowId = (String, Option<u64>, String);

fn row_id(row: &InputRow) -> RowId {
    match row {
        InputRow::Candidate(c) => (c.source_file.clone(), c.source_offset, c.url.clone()),
        InputRow::Invalid {
            url,
            source_file,
            source_offset,
            ..
        } => (source_file.clone(), Some(*source_offset), url.clone()),
    }
}

fn describe(id: &RowId) -> String {
    let offset = id.1.map_or_else(|| "-".to_owned(), |o| o.to_string());
    format!("{} @ {offset}: {}", id.0, id.2)
}

/// Checks the output at `output` against `inputs` (the same list, in any order, that ingest ran).
pub async fn audit(inputs: &[String], output: &str, config: &InputConfig) -> Result<AuditReport> {
    let location = Location::parse(output)?;
    let spec: RunSpec = serde_json::from_slice(&location.get(RUN_FILE).await?)
        .with_context(|| format!("{} is not an ingest run file", location.uri_of(RUN_FILE)))?;
    let mut expected: HashMap<RowId, u64> = HashMap::new();
    let mut report = AuditReport::default();
    for uri in inputs {
        let rows: Vec<InputRow> = if inputs::kind_of(uri)?.0 == InputKind::Seeds {
            let mut rows = Vec::new();
            for index in 0..spec.num_shards {
                let name = seeds::expansion_name(uri, Slice::new(index, spec.num_shards)?);
                let bytes = location.get(&name).await?;
                let part: Vec<InputRow> = serde_json::from_slice(&bytes).with_context(|| {
                    format!("{} is not a seed expansion", location.uri_of(&name))
                })?;
                rows.extend(part);
            }
            rows
        } else {
            let data = inputs::open_input(uri).await?;
            let (uri, config) = (uri.clone(), config.clone());
            tokio::task::spawn_blocking(move || {
                inputs::read_rows(&uri, data, &config).map(Iterator::collect)
            })
            .await??
        };
        for row in &rows {
            *expected.entry(row_id(row)).or_default() += 1;
            report.input_rows += 1;
        }
    }

    let listing = crate::ingest::list_shards(&location).await?;
    report.uncommitted_shards = listing.uncommitted;
    let mut seen: HashMap<RowId, u64> = HashMap::new();
    let mut keys: HashSet<String> = HashSet::new();
    for name in &listing.committed {
        report.shards += 1;
        let stats_name = stats_file_name(name);
        let stats = ShardStats::from_json(
            &location.uri_of(&stats_name),
            &location.get(&stats_name).await?,
        )?;
        for (tally, counts) in [
            (&mut report.drop_reasons, stats.drop_reasons),
            (&mut report.error_tallies, stats.error_tallies),
        ] {
            for (what, count) in counts {
                *tally.entry(what).or_default() += count;
            }
        }
        let records = pair_shard::read(&location.uri_of(name), location.get(name).await?)?;
        for record in records {
            report.output_rows += 1;
            *report
                .counts_by_status
                .entry(record.status.as_str().to_owned())
                .or_default() += 1;
            if !keys.insert(record.key.clone()) {
                report.repeated_keys += 1;
            }
            let id = (record.source_file, record.source_offset, record.url);
            *seen.entry(id).or_default() += 1;
        }
    }

    let note = |list: &mut (u64, Vec<String>), id: &RowId, count: u64| {
        list.0 += count;
        if list.1.len() < EXAMPLES {
            list.1.push(describe(id));
        }
    };
    let mut expected_sorted: Vec<_> = expected.iter().collect();
    expected_sorted.sort();
    for (id, &want) in expected_sorted {
        let got = seen.get(id).copied().unwrap_or(0);
        if got < want {
            note(&mut report.missing, id, want - got);
        } else if got > want {
            note(&mut report.duplicated, id, got - want);
        }
    }
    let mut seen_sorted: Vec<_> = seen.iter().collect();
    seen_sorted.sort();
    for (id, &got) in seen_sorted {
        if !expected.contains_key(id) {
            note(&mut report.unexpected, id, got);
        }
    }
    Ok(report)
}
