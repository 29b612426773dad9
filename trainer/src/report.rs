//! `trainer report`: one Markdown page for a whole run — PNG loss and accuracy curves per
//! training stage (from its `log.jsonl`) and a recall table of the evaluations (from their
//! `report.json`), with chance for reference.
//!
//! Curves are drawn with the `image` crate only (no font): axes, four grid lines and one
//! polyline per series; the page gives each curve's colour and the axes' ranges in words.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use image::{Rgb, RgbImage};

use crate::retrieval::eval::EvalReport;
use crate::retrieval::recall::RetrievalRecall;

/// Width of a curve image, pixels.
const WIDTH: u32 = 640;
/// Height of a curve image, pixels.
const HEIGHT: u32 = 320;
/// Blank border around the plot area, pixels.
const MARGIN: u32 = 24;

/// One series a log may hold: its key, the colour of its curve and that colour's name.
type Series = (&'static str, [u8; 3], &'static str);

/// The losses of `trainer run` and `trainer finetune` logs.
const LOSSES: [Series; 5] = [
    ("loss", [0, 0, 0], "black"),
    ("mlm", [31, 119, 180], "blue"),
    ("moc", [255, 127, 14], "orange"),
    ("mrfr", [44, 160, 44], "green"),
    ("itm", [214, 39, 40], "red"),
];

/// The accuracies: pre-training's per objective, fine-tuning's share of groups ranked right.
const ACCURACIES: [Series; 4] = [
    ("mlm_accuracy", [31, 119, 180], "blue"),
    ("moc_accuracy", [255, 127, 14], "orange"),
    ("itm_accuracy", [214, 39, 40], "red"),
    ("group_accuracy", [0, 0, 0], "black"),
];

/// `trainer report`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// A training run to plot, as NAME=FOLDER (the folder holding its log.jsonl: a `trainer
    /// run` or `trainer finetune` output); repeat for each stage, in order.
    #[arg(long = "run", value_name = "NAME=DIR")]
    pub runs: Vec<String>,
    /// An evaluation to tabulate, as NAME=FOLDER (the folder holding its report.json: a `trainer
    /// eval` output); repeat (e.g. zero-shot=..., fine-tuned=...). Evaluations on the same test
    /// set share a table; each test set gets its own, with its chance row.
    #[arg(long = "eval", value_name = "NAME=DIR")]
    pub evals: Vec<String>,
    /// Folder for report.md and the PNG curves.
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Title of the page.
    #[arg(long, default_value = "ImageBERT run")]
    pub title: String,
}

fn split_named(value: &str, flag: &str) -> Result<(String, PathBuf)> {
    match value.split_once('=') {
        Some((name, dir))
            if !name.is_empty()
                && !dir.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Ok((name.to_owned(), PathBuf::from(dir)))
        }
        _ => bail!("{flag} `{value}`: expected NAME=FOLDER, NAME of letters, digits, - and _"),
    }
}

/// One curve: its name, colour and (step, value) points.
struct Curve {
    name: &'static str,
    colour: [u8; 3],
    colour_name: &'static str,
    points: Vec<(f64, f64)>,
}

/// The lines of a `log.jsonl`, each with its step.
fn read_log(log: &Path) -> Result<Vec<(f64, serde_json::Value)>> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    text.lines()
        .enumerate()
        .map(|(number, line)| {
            let entry: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}: line {} is not JSON", log.display(), number + 1))?;
            let step = entry["step"]
                .as_f64()
                .with_context(|| format!("{}: line {} has no step", log.display(), number + 1))?;
            Ok((step, entry))
        })
        .collect()
}

/// The curves of `series` the log's lines hold (none when they hold none of them).
fn curves_of(lines: &[(f64, serde_json::Value)], series: &[Series]) -> Vec<Curve> {
    series
        .iter()
        .map(|&(name, colour, colour_name)| Curve {
            name,
            colour,
            colour_name,
            points: lines
                .iter()
                .filter_map(|(step, entry)| {
                    let value = entry[name].as_f64().filter(|v| v.is_finite())?;
                    Some((*step, value))
                })
                .collect(),
        })
        .filter(|curve| !curve.points.is_empty())
        .collect()
}

/// Draws a straight line between two pixel positions (clipped to the image).
fn line(image: &mut RgbImage, from: (f64, f64), to: (f64, f64), colour: Rgb<u8>) {
    let steps = (to.0 - from.0)
        .abs()
        .max((to.1 - from.1).abs())
        .ceil()
        .max(1.0) as usize;
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let (x, y) = (from.0 + (to.0 - from.0) * t, from.1 + (to.1 - from.1) * t);
        if x >= 0.0 && y >= 0.0 && (x as u32) < image.width() && (y as u32) < image.height() {
            image.put_pixel(x as u32, y as u32, colour);
        }
    }
}

/// The plot of `curves`, and its x and y ranges.
fn plot(curves: &[Curve]) -> (RgbImage, (f64, f64), (f64, f64)) {
    let all = curves.iter().flat_map(|c| c.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, 0.0f64, f64::MIN);
    for &(x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let mut image = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb([255, 255, 255]));
    let (left, right) = (MARGIN as f64, (WIDTH - MARGIN) as f64);
    let (top, bottom) = (MARGIN as f64, (HEIGHT - MARGIN) as f64);
    let grey = Rgb([200, 200, 200]);
    for k in 0..=4 {
        let y = top + (bottom - top) * k as f64 / 4.0;
        line(&mut image, (left, y), (right, y), grey);
    }
    line(&mut image, (left, top), (left, bottom), Rgb([90, 90, 90]));
    line(
        &mut image,
        (left, bottom),
        (right, bottom),
        Rgb([90, 90, 90]),
    );
    let at = |(x, y): (f64, f64)| {
        (
            left + (right - left) * (x - x0) / (x1 - x0),
            bottom - (bottom - top) * (y - y0) / (y1 - y0),
        )
    };
    // The total last, on top, two pixels thick.
    for curve in curves.iter().rev() {
        let colour = Rgb(curve.colour);
        for pair in curve.points.windows(2) {
            let (a, b) = (at(pair[0]), at(pair[1]));
            line(&mut image, a, b, colour);
            if curve.name == "loss" {
                line(&mut image, (a.0, a.1 + 1.0), (b.0, b.1 + 1.0), colour);
            }
        }
    }
    (image, (x0, x1), (y0, y1))
}

fn recall_row(name: &str, r: &RetrievalRecall) -> String {
    let (t, i) = (&r.text_retrieval, &r.image_retrieval);
    format!(
        "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
        t.r1, t.r5, t.r10, i.r1, i.r5, i.r10, r.rsum
    )
}

/// Writes `report.md` and one PNG per run into `args.output`; returns the page's path.
pub fn write_report(args: &ReportArgs) -> Result<PathBuf> {
    ensure!(
        !args.runs.is_empty() || !args.evals.is_empty(),
        "nothing to report: give --run and/or --eval"
    );
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let mut page = format!("# {}\n", args.title);
    if !args.runs.is_empty() {
        page += "\n## Training\n";
    }
    for run in &args.runs {
        let (name, dir) = split_named(run, "--run")?;
        let log = dir.join("log.jsonl");
        let lines = read_log(&log)?;
        page += &format!("\n### {name}\n");
        for (kind, series, what) in [
            ("loss", &LOSSES[..], "losses"),
            ("accuracy", &ACCURACIES[..], "accuracies"),
        ] {
            let curves = curves_of(&lines, series);
            if curves.is_empty() {
                ensure!(kind != "loss", "{}: no loss to plot", log.display());
                continue;
            }
            let (image, (x0, x1), (y0, y1)) = plot(&curves);
            let file = format!("{kind}-{name}.png");
            let path = args.output.join(&file);
            image
                .save(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            let legend: Vec<String> = curves
                .iter()
                .map(|c| {
                    let (first, last) = (c.points[0].1, c.points[c.points.len() - 1].1);
                    format!("{} ({}): {first:.3} → {last:.3}", c.name, c.colour_name)
                })
                .collect();
            page += &format!(
                "\n![{name} {what}]({file})\n\nSteps {x0}–{x1}; y axis {y0:.2}–{y1:.2} (grid lines at quarters). {}.\n",
                legend.join("; ")
            );
        }
    }
    page += &recall_tables(&args.evals)?;
    let path = args.output.join("report.md");
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The recall tables of `--eval NAME=DIR` reports: one per test set (evaluations of the same
/// Karpathy file and splits share a table, in first-seen order), each with chance for reference.
fn recall_tables(evals: &[String]) -> Result<String> {
    let mut groups: Vec<(EvalReport, String, String)> = Vec::new();
    for eval in evals {
        let (name, dir) = split_named(eval, "--eval")?;
        let path = dir.join("report.json");
        let report: EvalReport = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("{}: not a `trainer eval` report", path.display()))?;
        let described = format!(
            "- {name}: {} ({:?}, {}, {} images, {} captions)\n",
            report.label, report.protocol, report.mode, report.images, report.captions
        );
        let row = recall_row(&name, &report.recall);
        match groups.iter_mut().find(|(first, ..)| {
            (&first.test_set, first.images, first.captions)
                == (&report.test_set, report.images, report.captions)
        }) {
            Some((_, rows, text)) => {
                rows.push_str(&row);
                text.push_str(&described);
            }
            None => groups.push((report, row, described)),
        }
    }
    let mut page = String::new();
    if !groups.is_empty() {
        page += "\n## Retrieval\n";
    }
    for (first, rows, described) in &groups {
        if groups.len() > 1 {
            page += &format!(
                "\n### {} images, {} captions: {}\n",
                first.images, first.captions, first.test_set
            );
        }
        page += "\n| model | TR R@1 | TR R@5 | TR R@10 | IR R@1 | IR R@5 | IR R@10 | RSUM |\n|---|---|---|---|---|---|---|---|\n";
        page += rows;
        page += &recall_row("chance", &first.chance);
        page += &format!(
            "\nChance: a uniformly random ranking of the {} images and {} captions.\n\n{described}",
            first.images, first.captions
        );
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::eval::Protocol;
    use crate::retrieval::recall::Recall;

    /// Writes `report` as `dir/report.json`, as `trainer eval` would.
    fn write_eval(dir: &Path, report: &EvalReport) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("report.json"), serde_json::to_vec(report).unwrap()).unwrap();
    }

    #[test]
    fn writes_curves_and_the_recall_table() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("stage1");
        std::fs::create_dir_all(&run).unwrap();
        let log: String = (1..=20)
            .map(|s| {
                format!(
                    "{{\"step\":{s},\"loss\":{},\"mlm\":{},\"itm\":0.69,\"itm_accuracy\":{}}}\n",
                    10.0 / s as f64,
                    5.0 / s as f64,
                    0.5 + s as f64 / 40.0
                )
            })
            .collect();
        std::fs::write(run.join("log.jsonl"), log).unwrap();
        let losses_only = dir.path().join("losses-only");
        std::fs::create_dir_all(&losses_only).unwrap();
        std::fs::write(losses_only.join("log.jsonl"), "{\"step\":1,\"loss\":2.0}\n").unwrap();
        let eval = dir.path().join("eval");
        let recall = |r1| {
            RetrievalRecall::new(
                Recall {
                    r1,
                    r5: 50.0,
                    r10: 80.0,
                },
                Recall {
                    r1,
                    r5: 40.0,
                    r10: 60.0,
                },
            )
        };
        let report = EvalReport {
            label: "ckpt".into(),
            test_set: "captions.json (test)".into(),
            protocol: Protocol::Full,
            mode: "exhaustive".into(),
            images: 19,
            captions: 38,
            folds: Vec::new(),
            recall: recall(30.0),
            chance: recall(5.0),
            exhaustive: None,
            recall_loss: None,
            first_stage: None,
            pairs_scored: 722,
            chunks_reused: 0,
            seconds: 1.0,
            pairs_per_s: 722.0,
        };
        write_eval(&eval, &report);
        let args = ReportArgs {
            runs: vec![
                format!("stage1={}", run.display()),
                format!("other={}", losses_only.display()),
            ],
            evals: vec![format!("fine-tuned={}", eval.display())],
            output: dir.path().join("report"),
            title: "test".into(),
        };
        let page = std::fs::read_to_string(write_report(&args).unwrap()).unwrap();
        assert!(
            !page.contains("### 19 images"),
            "one test set, one table: {page}"
        );
        assert!(page.contains("![stage1 losses](loss-stage1.png)"), "{page}");
        assert!(page.contains("loss (black): 10.000 → 0.500"), "{page}");
        assert!(
            page.contains("![stage1 accuracies](accuracy-stage1.png)"),
            "{page}"
        );
        assert!(page.contains("itm_accuracy (red): 0.525 → 1.000"), "{page}");
        assert!(page.contains("![other losses](loss-other.png)"), "{page}");
        assert!(!dir.path().join("report/accuracy-other.png").exists());
        let accuracy = image::open(dir.path().join("report/accuracy-stage1.png"))
            .unwrap()
            .to_rgb8();
        let red = accuracy.pixels().filter(|p| p.0 == [214, 39, 40]).count();
        assert!(red > 100, "the ITM accuracy is drawn");
        assert!(
            page.contains("| fine-tuned | 30.0 | 50.0 | 80.0 | 30.0 | 40.0 | 60.0 | 290.0 |"),
            "{page}"
        );
        assert!(page.contains("| chance | 5.0 |"), "{page}");
        let png = image::open(dir.path().join("report/loss-stage1.png"))
            .unwrap()
            .to_rgb8();
        assert_eq!(png.dimensions(), (WIDTH, HEIGHT));
        let count = |colour: [u8; 3]| png.pixels().filter(|p| p.0 == colour).count();
        assert!(count([0, 0, 0]) > 200, "the total loss is drawn");
        assert!(count([31, 119, 180]) > 100, "mlm is drawn");
        assert!(count([214, 39, 40]) > 100, "itm is drawn");
        assert_eq!(count([44, 160, 44]), 0, "no mrfr in this log");

        // A second test set gets its own table and chance row; a second model on the first
        // set joins the first table.
        let photos = dir.path().join("eval-photos");
        let on_photos = EvalReport {
            test_set: "photos.json (test)".into(),
            images: 9,
            captions: 45,
            recall: recall(40.0),
            chance: recall(11.0),
            ..report.clone()
        };
        write_eval(&photos, &on_photos);
        let two_sets = ReportArgs {
            evals: vec![
                format!("fine-tuned={}", eval.display()),
                format!("fine-tuned={}", photos.display()),
                format!("zero-shot={}", eval.display()),
            ],
            ..args.clone()
        };
        let page = std::fs::read_to_string(write_report(&two_sets).unwrap()).unwrap();
        let first = page
            .find("### 19 images, 38 captions: captions.json (test)")
            .expect(&page);
        let second = page
            .find("### 9 images, 45 captions: photos.json (test)")
            .expect(&page);
        let (first, second) = (&page[first..second], &page[second..]);
        assert!(first.contains("| zero-shot | 30.0 |"), "{first}");
        assert!(first.contains("| chance | 5.0 |"), "{first}");
        assert!(second.contains("| fine-tuned | 40.0 |"), "{second}");
        assert!(second.contains("| chance | 11.0 |"), "{second}");
        assert!(!second.contains("zero-shot"), "{second}");

        let bad = ReportArgs {
            runs: vec!["no-equals-sign".into()],
            ..args.clone()
        };
        let err = write_report(&bad).unwrap_err().to_string();
        assert!(
            err.contains("--run `no-equals-sign`: expected NAME=FOLDER"),
            "{err}"
        );
    }
}
