//! `trainer eval`: image–text retrieval Recall@1/5/10 of a checkpoint under the benchmarks'
//! protocols, as a JSON report and a Markdown table.
//!
//! Protocols (the paper's, §4.3): `flickr30k-1k` and `coco-5k` score every test image against
//! every test caption; `coco-1k` splits the 5k test images into 5 folds of 1k in file order, scores
//! each fold's images against its captions, and reports the mean. `folds:N` is the general form.
//!
//! Exhaustive scoring runs the cross-encoder on every pair of a fold, in chunks of image rows;
//! each finished chunk is written to `<output>/scores/` (atomically, with a SHA-256 and the
//! fingerprint of model, data and limits) so a killed evaluation resumes at the first missing
//! chunk. A chunk whose checksum fails is named in a warning and recomputed; one of another model
//! or data set is recomputed. `rerank K` scores only the K best candidates of the cheap first
//! stage ([`super::scoring`]) per query with the full model; `compare_exhaustive` also runs the
//! exhaustive scoring and reports the recall reranking lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::data::RetrievalSet;
use super::recall::{Recall, RetrievalRecall, ScoreMatrix};
use super::scoring::EmbeddedSet;
use crate::model::imagebert::ImageBert;

/// How the test images are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// Every image against every caption (Flickr30k 1k, COCO 5k).
    Full,
    /// Images split into this many contiguous folds, each scored alone, recalls averaged
    /// (COCO 1k: 5).
    Folds(usize),
}

impl Protocol {
    /// Parses `flickr30k-1k`, `coco-5k`, `full` (all [`Protocol::Full`]), `coco-1k` (5 folds) or
    /// `folds:N`.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "flickr30k-1k" | "coco-5k" | "full" => Ok(Self::Full),
            "coco-1k" => Ok(Self::Folds(5)),
            other => match other.strip_prefix("folds:").map(str::parse::<usize>) {
                Some(Ok(n)) if n >= 1 => Ok(Self::Folds(n)),
                _ => bail!(
                    "protocol `{other}`: expected flickr30k-1k, coco-1k, coco-5k, full or folds:N"
                ),
            },
        }
    }

    /// The image ranges of the folds of `images` images.
    pub fn folds(&self, images: usize) -> Vec<std::ops::Range<usize>> {
        let n = match self {
            Self::Full => 1,
            Self::Folds(n) => (*n).min(images).max(1),
        };
        (0..n)
            .map(|f| images * f / n..images * (f + 1) / n)
            .collect()
    }
}

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The protocol.
    pub protocol: Protocol,
    /// Pairs per encoder call.
    pub pair_batch: usize,
    /// Image rows per score chunk (the unit of resume).
    pub chunk_images: usize,
    /// Re-rank the first stage's K best candidates instead of scoring every pair.
    pub rerank: Option<usize>,
    /// With `rerank`, also score every pair and report the recall reranking lost.
    pub compare_exhaustive: bool,
    /// Folder for `report.json`, `report.md` and `scores/`.
    pub output: PathBuf,
    /// What is evaluated (a checkpoint path), for the report.
    pub label: String,
    /// What it is evaluated on (the Karpathy file and its splits), for the report.
    pub test_set: String,
}

/// One fold's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldReport {
    /// Images in the fold.
    pub images: usize,
    /// Captions in the fold.
    pub captions: usize,
    /// Recall of the evaluated mode (exhaustive, or reranked).
    pub recall: RetrievalRecall,
    /// A uniformly random ranking's expected recall.
    pub chance: RetrievalRecall,
    /// Exhaustive recall, when reranking was compared with it.
    pub exhaustive: Option<RetrievalRecall>,
    /// With reranking: the first stage's ranking alone.
    #[serde(default)]
    pub first_stage: Option<RetrievalRecall>,
}

/// The evaluation report (`report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// What was evaluated.
    pub label: String,
    /// What it was evaluated on: the Karpathy file and its splits (empty in reports written
    /// before this field existed).
    #[serde(default)]
    pub test_set: String,
    /// The protocol.
    pub protocol: Protocol,
    /// `exhaustive` or `rerank K`.
    pub mode: String,
    /// Images and captions in all folds.
    pub images: usize,
    /// Captions in all folds.
    pub captions: usize,
    /// Per fold.
    pub folds: Vec<FoldReport>,
    /// Mean over folds of the evaluated mode.
    pub recall: RetrievalRecall,
    /// Mean over folds of chance.
    pub chance: RetrievalRecall,
    /// Mean over folds of exhaustive recall, when compared.
    pub exhaustive: Option<RetrievalRecall>,
    /// Exhaustive minus reranked, per metric, when compared.
    pub recall_loss: Option<RetrievalRecall>,
    /// With reranking: mean over folds of the first stage's ranking alone.
    #[serde(default)]
    pub first_stage: Option<RetrievalRecall>,
    /// Pairs the cross-encoder scored in this process (chunks reused from disk excluded).
    pub pairs_scored: u64,
    /// Score chunks reused from an earlier, interrupted evaluation.
    pub chunks_reused: usize,
    /// Wall-clock seconds of scoring.
    pub seconds: f64,
    /// `pairs_scored / seconds`.
    pub pairs_per_s: f64,
}

impl EvalReport {
    /// The Markdown table of the report.
    pub fn markdown(&self) -> String {
        let row = |name: &str, r: &RetrievalRecall| {
            let t = &r.text_retrieval;
            let i = &r.image_retrieval;
            format!(
                "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                t.r1, t.r5, t.r10, i.r1, i.r5, i.r10, r.rsum
            )
        };
        let mut out = format!(
            "# Retrieval: {}\n\nProtocol {:?}, {} images, {} captions, {} ({} pairs scored, {:.1} pairs/s).\n\n\
             | | TR R@1 | TR R@5 | TR R@10 | IR R@1 | IR R@5 | IR R@10 | RSUM |\n|---|---|---|---|---|---|---|---|\n",
            self.label,
            self.protocol,
            self.images,
            self.captions,
            self.mode,
            self.pairs_scored,
            self.pairs_per_s
        );
        out += &row(&self.mode, &self.recall);
        if let Some(exhaustive) = &self.exhaustive {
            out += &row("exhaustive", exhaustive);
        }
        if let Some(first_stage) = &self.first_stage {
            out += &row("first stage alone", first_stage);
        }
        out += &row("chance", &self.chance);
        out
    }
}

fn subtract(a: &RetrievalRecall, b: &RetrievalRecall) -> RetrievalRecall {
    let d = |x: &Recall, y: &Recall| Recall {
        r1: x.r1 - y.r1,
        r5: x.r5 - y.r5,
        r10: x.r10 - y.r10,
    };
    RetrievalRecall::new(
        d(&a.text_retrieval, &b.text_retrieval),
        d(&a.image_retrieval, &b.image_retrieval),
    )
}

/// Magic and version at the head of a score chunk file.
const CHUNK_MAGIC: &[u8; 8] = b"IBSCORE1";

/// Writes a chunk: magic, fingerprint (32 bytes), rows and columns (u64 LE), f32 LE scores,
/// then the SHA-256 of everything before it; to a temporary name, then renamed into place.
fn write_chunk(
    path: &Path,
    fingerprint: &[u8; 32],
    rows: usize,
    columns: usize,
    scores: &[f32],
) -> Result<()> {
    let mut bytes = Vec::with_capacity(56 + scores.len() * 4 + 32);
    bytes.extend_from_slice(CHUNK_MAGIC);
    bytes.extend_from_slice(fingerprint);
    bytes.extend_from_slice(&(rows as u64).to_le_bytes());
    bytes.extend_from_slice(&(columns as u64).to_le_bytes());
    for s in scores {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    let digest = Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, &bytes).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("renaming {}", path.display()))
}

/// What reading a chunk found.
enum Chunk {
    Missing,
    Stale,
    Corrupt(String),
    Ready(Vec<f32>),
}

fn read_chunk(path: &Path, fingerprint: &[u8; 32], rows: usize, columns: usize) -> Chunk {
    let Ok(bytes) = std::fs::read(path) else {
        return Chunk::Missing;
    };
    let expected = 56 + rows * columns * 4 + 32;
    if bytes.len() < 56 + 32 || &bytes[..8] != CHUNK_MAGIC {
        return Chunk::Corrupt("not a score chunk".into());
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Chunk::Corrupt("checksum mismatch".into());
    }
    if &body[8..40] != fingerprint || bytes.len() != expected {
        return Chunk::Stale;
    }
    Chunk::Ready(
        body[56..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// Where one fold's score chunks live and what they must have been made from.
struct ChunkFiles {
    /// `<output>/scores`.
    dir: PathBuf,
    /// Index of the fold.
    fold: usize,
    /// SHA-256 of model, data and fold.
    fingerprint: [u8; 32],
    /// Image rows per chunk.
    rows: usize,
}

/// Scores every pair of `set` with the model, chunk by chunk, reusing finished chunks.
fn exhaustive<B: Backend>(
    model: &ImageBert<B>,
    embedded: &EmbeddedSet<B>,
    set: &RetrievalSet,
    files: &ChunkFiles,
    pair_batch: usize,
    progress: &indicatif::ProgressBar,
    counters: &mut (u64, usize),
) -> Result<ScoreMatrix> {
    let (dir, fingerprint) = (&files.dir, &files.fingerprint);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let captions = set.captions.len();
    let mut scores = Vec::with_capacity(set.images.len() * captions);
    for start in (0..set.images.len()).step_by(files.rows.max(1)) {
        let end = (start + files.rows.max(1)).min(set.images.len());
        let path = dir.join(format!(
            "fold{}-images{start:07}-{end:07}.scores",
            files.fold
        ));
        match read_chunk(&path, fingerprint, end - start, captions) {
            Chunk::Ready(values) => {
                scores.extend(values);
                counters.1 += 1;
                progress.inc(((end - start) * captions) as u64);
                continue;
            }
            Chunk::Corrupt(why) => {
                tracing::warn!(chunk = %path.display(), why, "corrupt score chunk: recomputing it");
            }
            Chunk::Missing | Chunk::Stale => {}
        }
        let pairs: Vec<(usize, usize)> = (start..end)
            .flat_map(|i| (0..captions).map(move |c| (i, c)))
            .collect();
        let mut values = Vec::with_capacity(pairs.len());
        for block in pairs.chunks(pair_batch.max(1) * 4) {
            values.extend(embedded.score(model, block, pair_batch));
            progress.inc(block.len() as u64);
        }
        counters.0 += pairs.len() as u64;
        write_chunk(&path, fingerprint, end - start, captions, &values)?;
        scores.extend(values);
    }
    Ok(ScoreMatrix {
        images: set.images.len(),
        captions,
        scores,
    })
}

/// The K best of `values` by score, as indices.
fn top_k(values: impl Iterator<Item = (usize, f32)>, k: usize) -> Vec<usize> {
    let mut all: Vec<(usize, f32)> = values.collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.into_iter().take(k).map(|(i, _)| i).collect()
}

/// Reranked recall: the first stage ranks, the full model re-scores the top K of each query;
/// re-scored candidates rank above the rest, which keep their first-stage order. Returns it and
/// the first stage's recall alone.
fn reranked<B: Backend>(
    model: &ImageBert<B>,
    embedded: &EmbeddedSet<B>,
    set: &RetrievalSet,
    k: usize,
    pair_batch: usize,
    counters: &mut (u64, usize),
) -> Result<(RetrievalRecall, RetrievalRecall)> {
    let images = set.images.len();
    let captions = set.captions.len();
    let cheap = ScoreMatrix {
        images,
        captions,
        scores: embedded.first_stage(model),
    };
    let mut wanted: Vec<(usize, usize)> = Vec::new();
    let tr: Vec<Vec<usize>> = (0..images)
        .map(|i| top_k((0..captions).map(|c| (c, cheap.get(i, c))), k))
        .collect();
    let ir: Vec<Vec<usize>> = (0..captions)
        .map(|c| top_k((0..images).map(|i| (i, cheap.get(i, c))), k))
        .collect();
    for (i, cs) in tr.iter().enumerate() {
        wanted.extend(cs.iter().map(|&c| (i, c)));
    }
    for (c, is) in ir.iter().enumerate() {
        wanted.extend(is.iter().map(|&i| (i, c)));
    }
    wanted.sort_unstable();
    wanted.dedup();
    let full: HashMap<(usize, usize), f32> = wanted
        .iter()
        .copied()
        .zip(embedded.score(model, &wanted, pair_batch))
        .collect();
    counters.0 += wanted.len() as u64;
    let owners = set.caption_images();
    // A query's rank: among its candidates by the full score when a correct item is one of
    // them, else after all candidates by the first-stage score (ties count against the model).
    let rank = |candidates: &[usize],
                is_correct: &dyn Fn(usize) -> bool,
                full_score: &dyn Fn(usize) -> f32,
                cheap_score: &dyn Fn(usize) -> f32,
                universe: usize| {
        let best_full = candidates
            .iter()
            .filter(|&&x| is_correct(x))
            .map(|&x| full_score(x))
            .max_by(f32::total_cmp);
        match best_full {
            Some(best) => candidates
                .iter()
                .filter(|&&x| !is_correct(x) && full_score(x) >= best)
                .count(),
            None => {
                let best = (0..universe)
                    .filter(|&x| is_correct(x))
                    .map(cheap_score)
                    .max_by(f32::total_cmp)
                    .unwrap_or(f32::NEG_INFINITY);
                candidates.len()
                    + (0..universe)
                        .filter(|x| !candidates.contains(x) && !is_correct(*x))
                        .filter(|&x| cheap_score(x) >= best)
                        .count()
            }
        }
    };
    let text_ranks: Vec<usize> = tr
        .iter()
        .enumerate()
        .map(|(i, candidates)| {
            rank(
                candidates,
                &|c| owners[c] == i,
                &|c| full[&(i, c)],
                &|c| cheap.get(i, c),
                captions,
            )
        })
        .collect();
    let image_ranks: Vec<usize> = ir
        .iter()
        .enumerate()
        .map(|(c, candidates)| {
            rank(
                candidates,
                &|i| owners[c] == i,
                &|i| full[&(i, c)],
                &|i| cheap.get(i, c),
                images,
            )
        })
        .collect();
    let recall = RetrievalRecall::new(
        Recall::from_ranks(&text_ranks),
        Recall::from_ranks(&image_ranks),
    );
    Ok((recall, cheap.recall(&owners)?))
}

/// Evaluates `model` on `set`. `model_digest` identifies the weights (the checkpoint's model
/// file checksum) so that score chunks of another model are never reused. Writes
/// `report.json` and `report.md` into `options.output` and returns the report.
pub fn evaluate<B: Backend>(
    model: &ImageBert<B>,
    model_digest: &str,
    set: &RetrievalSet,
    pad_id: u32,
    options: &EvalOptions,
    device: &B::Device,
) -> Result<EvalReport> {
    ensure!(options.pair_batch > 0, "pair batch must be positive");
    if let Some(k) = options.rerank {
        ensure!(k > 0, "--rerank K must be positive");
    }
    std::fs::create_dir_all(&options.output)
        .with_context(|| format!("creating {}", options.output.display()))?;
    let folds = options.protocol.folds(set.images.len());
    let exhaustive_needed = options.rerank.is_none() || options.compare_exhaustive;
    let total_pairs: usize = folds
        .iter()
        .map(|f| {
            let fold_captions = set.captions.iter().filter(|c| f.contains(&c.image)).count();
            f.len() * fold_captions
        })
        .sum();
    let progress = indicatif::ProgressBar::new(if exhaustive_needed {
        total_pairs as u64
    } else {
        0
    });
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} pairs  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    let started = Instant::now();
    let mut counters = (0u64, 0usize);
    let mut reports = Vec::new();
    for (index, range) in folds.iter().enumerate() {
        let fold = set.fold(range.clone());
        let owners = fold.caption_images();
        let mut fingerprint = Sha256::new();
        for part in [
            model_digest,
            &set.digest,
            &format!("{range:?}/{}", fold.captions.len()),
        ] {
            fingerprint.update(part.as_bytes());
            fingerprint.update([0]);
        }
        let fingerprint: [u8; 32] = fingerprint.finalize().into();
        let embedded = EmbeddedSet::new(model, &fold, pad_id, device);
        let exhaustive_recall = if exhaustive_needed {
            let files = ChunkFiles {
                dir: options.output.join("scores"),
                fold: index,
                fingerprint,
                rows: options.chunk_images,
            };
            let matrix = exhaustive(
                model,
                &embedded,
                &fold,
                &files,
                options.pair_batch,
                &progress,
                &mut counters,
            )?;
            Some(matrix.recall(&owners)?)
        } else {
            None
        };
        let (recall, exhaustive, first_stage) = match options.rerank {
            Some(k) => {
                let (recall, first_stage) = reranked(
                    model,
                    &embedded,
                    &fold,
                    k,
                    options.pair_batch,
                    &mut counters,
                )?;
                (recall, exhaustive_recall, Some(first_stage))
            }
            None => (exhaustive_recall.expect("computed"), None, None),
        };
        reports.push(FoldReport {
            images: fold.images.len(),
            captions: fold.captions.len(),
            recall,
            chance: RetrievalRecall::chance(&owners, fold.images.len()),
            exhaustive,
            first_stage,
        });
    }
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let mean = |get: fn(&FoldReport) -> Option<RetrievalRecall>| -> Option<RetrievalRecall> {
        let all: Option<Vec<RetrievalRecall>> = reports.iter().map(get).collect();
        all.map(|all| RetrievalRecall::mean(&all))
    };
    let recall = mean(|f| Some(f.recall)).expect("every fold has a recall");
    let exhaustive = mean(|f| f.exhaustive);
    let first_stage = mean(|f| f.first_stage);
    let report = EvalReport {
        label: options.label.clone(),
        test_set: options.test_set.clone(),
        protocol: options.protocol,
        mode: match options.rerank {
            Some(k) => format!("rerank {k}"),
            None => "exhaustive".to_owned(),
        },
        images: set.images.len(),
        captions: reports.iter().map(|f| f.captions).sum(),
        recall,
        chance: mean(|f| Some(f.chance)).expect("every fold has chance"),
        recall_loss: exhaustive.as_ref().map(|e| subtract(e, &recall)),
        exhaustive,
        first_stage,
        folds: reports,
        pairs_scored: counters.0,
        chunks_reused: counters.1,
        seconds,
        pairs_per_s: counters.0 as f64 / seconds.max(1e-9),
    };
    let json = options.output.join("report.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let md = options.output.join("report.md");
    std::fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    Ok(report)
}

/// `trainer eval`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// A checkpoints folder or s3:// gs:// az:// URI of `trainer run` (zero-shot) or `trainer
    /// finetune`; its newest checkpoint is evaluated.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: String,
    /// The Karpathy-split JSON (dataset_coco.json, dataset_flickr30k.json): path or URI.
    #[arg(long, value_name = "FILE")]
    pub karpathy: String,
    /// Where the region shards of its images are (the `pipeline pack` output after `detector
    /// extract`): folder or s3:// gs:// az:// URI.
    #[arg(long, value_name = "URI")]
    pub features: String,
    /// Splits to evaluate, comma-separated (train, restval, val, test).
    #[arg(
        long,
        value_name = "LIST",
        default_value = "test",
        value_delimiter = ','
    )]
    pub splits: Vec<String>,
    /// flickr30k-1k or coco-5k (every image against every caption), coco-1k (5 folds of 1k,
    /// recalls averaged), full, or folds:N.
    #[arg(long, default_value = "full")]
    pub protocol: String,
    /// WordPiece vocabulary of the model.
    #[arg(long, value_name = "FILE", default_value = "assets/minilm/vocab.txt")]
    pub vocab: PathBuf,
    /// Most WordPiece ids per caption, [CLS]/[SEP] included.
    #[arg(long, default_value_t = crate::data::DEFAULT_MAX_TEXT_LEN)]
    pub max_text_len: usize,
    /// Most regions per image (the most confident are kept).
    #[arg(long, default_value_t = crate::data::DEFAULT_MAX_REGIONS)]
    pub max_regions: usize,
    /// (image, caption) pairs per encoder call.
    #[arg(long, default_value_t = 64)]
    pub pair_batch: usize,
    /// Image rows per score chunk written to --output/scores (the unit of resume).
    #[arg(long, default_value_t = 50)]
    pub chunk_images: usize,
    /// Score only the K best candidates of a cheap first stage per query with the full model.
    #[arg(long, value_name = "K")]
    pub rerank: Option<usize>,
    /// With --rerank, also score every pair and report the recall the reranking lost.
    #[arg(long, requires = "rerank")]
    pub compare_exhaustive: bool,
    /// Folder for report.json, report.md and the score chunks.
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
}

/// Runs `trainer eval` on backend `B`.
pub fn run_eval<B: Backend>(args: &EvalArgs, device: &B::Device) -> Result<EvalReport> {
    let splits = args
        .splits
        .iter()
        .map(|s| {
            schemas::karpathy::Split::parse(s)
                .with_context(|| format!("--splits: `{s}` is not train, restval, val or test"))
        })
        .collect::<Result<Vec<_>>>()?;
    let protocol = Protocol::parse(&args.protocol)?;
    let tokenizer = wordpiece::WordPiece::from_file(&args.vocab)?;
    let limits = crate::data::DataLimits {
        max_text_len: args.max_text_len,
        max_regions: args.max_regions,
    };
    let set = RetrievalSet::load(
        &super::data::RetrievalSource {
            karpathy: args.karpathy.clone(),
            features: args.features.clone(),
            splits,
        },
        &tokenizer,
        &limits,
    )?;
    let (model, config, checkpoint) = crate::training::load_model::<B>(&args.checkpoint, device)?;
    ensure!(
        config.region_feature_dim == set.detector.feature_dim,
        "{} expects {}-d region features, {} holds {}-d ones (detector `{}`)",
        checkpoint.uri,
        config.region_feature_dim,
        args.features,
        set.detector.feature_dim,
        set.detector.name
    );
    let digest = format!(
        "{:x}",
        Sha256::digest(checkpoint.file(crate::training::MODEL_FILE)?)
    );
    let options = EvalOptions {
        protocol,
        pair_batch: args.pair_batch,
        chunk_images: args.chunk_images,
        rerank: args.rerank,
        compare_exhaustive: args.compare_exhaustive,
        output: args.output.clone(),
        label: checkpoint.uri.clone(),
        test_set: format!("{} ({})", args.karpathy, args.splits.join(", ")),
    };
    evaluate(
        &model,
        &digest,
        &set,
        tokenizer.special().pad,
        &options,
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_and_folds() {
        assert_eq!(Protocol::parse("coco-1k").unwrap(), Protocol::Folds(5));
        assert_eq!(Protocol::parse("flickr30k-1k").unwrap(), Protocol::Full);
        assert_eq!(Protocol::parse("folds:3").unwrap(), Protocol::Folds(3));
        assert!(Protocol::parse("folds:0").is_err());
        assert!(
            Protocol::parse("coco")
                .unwrap_err()
                .to_string()
                .contains("coco-1k")
        );
        assert_eq!(Protocol::Folds(5).folds(5000)[4], 4000..5000);
        assert_eq!(Protocol::Folds(5).folds(12).len(), 5);
        assert_eq!(Protocol::Full.folds(7), vec![0..7]);
    }

    #[test]
    fn chunks_round_trip_and_corruption_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.scores");
        let fp = [7u8; 32];
        write_chunk(&path, &fp, 2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]).unwrap();
        match read_chunk(&path, &fp, 2, 3) {
            Chunk::Ready(v) => assert_eq!(v, [1.0, 2.0, 3.0, 4.0, 5.0, -6.5]),
            _ => panic!("chunk not read back"),
        }
        assert!(matches!(read_chunk(&path, &[8u8; 32], 2, 3), Chunk::Stale));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[60] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(read_chunk(&path, &fp, 2, 3), Chunk::Corrupt(_)));
        assert!(matches!(
            read_chunk(&dir.path().join("none"), &fp, 2, 3),
            Chunk::Missing
        ));
    }

    #[test]
    fn top_k_breaks_ties_by_index() {
        let v = [(0, 1.0), (1, 3.0), (2, 3.0), (3, 0.5)];
        assert_eq!(top_k(v.into_iter(), 2), [1, 2]);
        assert_eq!(top_k(v.into_iter(), 9), [1, 2, 0, 3]);
    }
}
