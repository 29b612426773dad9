//! Recall@K of image–text retrieval from a score matrix.
//!
//! `scores[i][c]` is the model's score of image `i` with caption `c` (higher = better match);
//! `caption_image[c]` is the image caption `c` describes. Several captions may describe one image.
//!
//! * Text retrieval (TR), per image: the rank of its best-scored correct caption among all
//!   captions. Hit at K when fewer than K wrong captions score at least as high.
//! * Image retrieval (IR), per caption: the rank of its image among all images. Hit at K when fewer
//!   than K wrong images score at least as high.
//!
//! Ties count against the model (a wrong item with the same score ranks first), so a constant
//! scorer gets no credit beyond what K alone allows. Recalls are percentages.

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

/// The K of Recall@K reported everywhere.
pub const KS: [usize; 3] = [1, 5, 10];

/// Recall@1/5/10 of one direction, in percent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Recall {
    /// Recall@1.
    pub r1: f64,
    /// Recall@5.
    pub r5: f64,
    /// Recall@10.
    pub r10: f64,
}

impl Recall {
    /// Recall@K from each query's rank (0 = the correct item came first).
    pub fn from_ranks(ranks: &[usize]) -> Self {
        let at = |k: usize| {
            if ranks.is_empty() {
                return 0.0;
            }
            100.0 * ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
        };
        Self {
            r1: at(KS[0]),
            r5: at(KS[1]),
            r10: at(KS[2]),
        }
    }

    fn sum(&self) -> f64 {
        self.r1 + self.r5 + self.r10
    }
}

/// Both directions and their sum (the "RSUM" of the retrieval papers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievalRecall {
    /// Text retrieval: images query captions.
    pub text_retrieval: Recall,
    /// Image retrieval: captions query images.
    pub image_retrieval: Recall,
    /// Sum of the six recalls.
    pub rsum: f64,
}

impl RetrievalRecall {
    /// Combines the two directions.
    pub fn new(text_retrieval: Recall, image_retrieval: Recall) -> Self {
        Self {
            text_retrieval,
            image_retrieval,
            rsum: text_retrieval.sum() + image_retrieval.sum(),
        }
    }

    /// The mean of several (COCO 1k: the five folds).
    pub fn mean(all: &[RetrievalRecall]) -> Self {
        let n = all.len().max(1) as f64;
        let avg = |get: fn(&RetrievalRecall) -> Recall| Recall {
            r1: all.iter().map(|r| get(r).r1).sum::<f64>() / n,
            r5: all.iter().map(|r| get(r).r5).sum::<f64>() / n,
            r10: all.iter().map(|r| get(r).r10).sum::<f64>() / n,
        };
        Self::new(avg(|r| r.text_retrieval), avg(|r| r.image_retrieval))
    }

    /// What a scorer drawing uniformly random rankings gets on average: TR hits at K with
    /// probability `1 - C(W, K) / C(C, K)` per image (W wrong of C captions), IR `K / images`.
    pub fn chance(caption_image: &[usize], images: usize) -> Self {
        let captions = caption_image.len();
        let mut per_image = vec![0usize; images];
        for &i in caption_image {
            per_image[i] += 1;
        }
        let tr = |k: usize| {
            let total: f64 = per_image
                .iter()
                .map(|&correct| {
                    // Probability that none of the first k of a random order is correct.
                    let wrong = captions - correct;
                    let miss = (0..k.min(captions)).fold(1.0, |p, j| {
                        if j >= wrong {
                            0.0
                        } else {
                            p * (wrong - j) as f64 / (captions - j) as f64
                        }
                    });
                    1.0 - miss
                })
                .sum();
            100.0 * total / images.max(1) as f64
        };
        let ir = |k: usize| 100.0 * (k.min(images) as f64) / images.max(1) as f64;
        Self::new(
            Recall {
                r1: tr(KS[0]),
                r5: tr(KS[1]),
                r10: tr(KS[2]),
            },
            Recall {
                r1: ir(KS[0]),
                r5: ir(KS[1]),
                r10: ir(KS[2]),
            },
        )
    }
}

/// A dense `images × captions` score matrix, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreMatrix {
    /// Number of images (rows).
    pub images: usize,
    /// Number of captions (columns).
    pub captions: usize,
    /// `images * captions` scores.
    pub scores: Vec<f32>,
}

impl ScoreMatrix {
    /// The score of image `i` with caption `c`.
    pub fn get(&self, i: usize, c: usize) -> f32 {
        self.scores[i * self.captions + c]
    }

    fn check(&self, caption_image: &[usize]) -> Result<()> {
        ensure!(
            self.scores.len() == self.images * self.captions,
            "score matrix holds {} values, expected {} x {}",
            self.scores.len(),
            self.images,
            self.captions
        );
        ensure!(
            caption_image.len() == self.captions,
            "{} captions scored, {} given",
            self.captions,
            caption_image.len()
        );
        ensure!(
            caption_image.iter().all(|&i| i < self.images),
            "a caption points at an image beyond the {} scored",
            self.images
        );
        ensure!(
            self.scores.iter().all(|s| !s.is_nan()),
            "the score matrix holds NaN"
        );
        Ok(())
    }

    /// Text-retrieval Recall@K (images query captions).
    pub fn text_retrieval(&self, caption_image: &[usize]) -> Result<Recall> {
        self.check(caption_image)?;
        let ranks: Vec<usize> = (0..self.images)
            .filter_map(|i| {
                let best = (0..self.captions)
                    .filter(|&c| caption_image[c] == i)
                    .map(|c| self.get(i, c))
                    .max_by(f32::total_cmp)?;
                Some(
                    (0..self.captions)
                        .filter(|&c| caption_image[c] != i && self.get(i, c) >= best)
                        .count(),
                )
            })
            .collect();
        Ok(Recall::from_ranks(&ranks))
    }

    /// Image-retrieval Recall@K (captions query images).
    pub fn image_retrieval(&self, caption_image: &[usize]) -> Result<Recall> {
        self.check(caption_image)?;
        let ranks: Vec<usize> = (0..self.captions)
            .map(|c| {
                let correct = self.get(caption_image[c], c);
                (0..self.images)
                    .filter(|&i| i != caption_image[c] && self.get(i, c) >= correct)
                    .count()
            })
            .collect();
        Ok(Recall::from_ranks(&ranks))
    }

    /// Both directions.
    pub fn recall(&self, caption_image: &[usize]) -> Result<RetrievalRecall> {
        Ok(RetrievalRecall::new(
            self.text_retrieval(caption_image)?,
            self.image_retrieval(caption_image)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: &[&[f32]]) -> ScoreMatrix {
        ScoreMatrix {
            images: rows.len(),
            captions: rows[0].len(),
            scores: rows.iter().flat_map(|r| r.iter().copied()).collect(),
        }
    }

    #[test]
    fn hand_computed_ranks_with_several_captions_per_image() {
        // 3 images; captions 0,1 -> image 0, 2,3 -> image 1, 4 -> image 2.
        let owners = [0, 0, 1, 1, 2];
        let m = matrix(&[
            &[0.1, 0.9, 0.5, 0.2, 0.0], // image 0: best correct 0.9, rank 0
            &[0.8, 0.1, 0.3, 0.2, 0.7], // image 1: best correct 0.3, wrong above: 0.8, 0.7 -> rank 2
            &[0.6, 0.5, 0.4, 0.3, 0.2], // image 2: correct 0.2, 4 wrong above -> rank 4
        ]);
        let tr = m.text_retrieval(&owners).unwrap();
        assert_eq!(tr.r1, 100.0 / 3.0);
        assert_eq!(tr.r5, 100.0);
        // IR per caption: c0 col [0.1,0.8,0.6] correct 0.1 -> rank 2; c1 [0.9,0.1,0.5] -> 0;
        // c2 [0.5,0.3,0.4] correct 0.3 -> 2; c3 [0.2,0.2,0.3] correct 0.2, tie 0.2 and 0.3 -> 2;
        // c4 [0.0,0.7,0.2] correct 0.2 -> 1.
        let ir = m.image_retrieval(&owners).unwrap();
        assert_eq!(ir.r1, 20.0);
        assert_eq!(ir.r5, 100.0);
        let both = m.recall(&owners).unwrap();
        assert_eq!(both.rsum, tr.r1 + tr.r5 + tr.r10 + ir.r1 + ir.r5 + ir.r10);
    }

    #[test]
    fn ties_count_against_the_model() {
        let owners = [0, 1];
        let constant = matrix(&[&[1.0, 1.0], &[1.0, 1.0]]);
        let r = constant.recall(&owners).unwrap();
        assert_eq!(r.text_retrieval.r1, 0.0);
        assert_eq!(r.image_retrieval.r1, 0.0);
        assert_eq!(r.text_retrieval.r5, 100.0);
        let perfect = matrix(&[&[1.0, 0.0], &[0.0, 1.0]]);
        assert_eq!(perfect.recall(&owners).unwrap().rsum, 600.0);
    }

    #[test]
    fn chance_matches_the_closed_forms() {
        // 10 images, one caption each: TR@1 = IR@1 = 10%, @10 = 100%.
        let owners: Vec<usize> = (0..10).collect();
        let c = RetrievalRecall::chance(&owners, 10);
        assert!((c.text_retrieval.r1 - 10.0).abs() < 1e-9);
        assert!((c.image_retrieval.r5 - 50.0).abs() < 1e-9);
        assert!((c.text_retrieval.r10 - 100.0).abs() < 1e-9);
        // 2 images with 2 captions each: TR@1 = 2/4.
        let c = RetrievalRecall::chance(&[0, 0, 1, 1], 2);
        assert!((c.text_retrieval.r1 - 50.0).abs() < 1e-9);
    }

    #[test]
    fn mean_of_folds_and_bad_matrices() {
        let a = RetrievalRecall::new(
            Recall {
                r1: 10.0,
                r5: 20.0,
                r10: 30.0,
            },
            Recall::default(),
        );
        let b = RetrievalRecall::new(
            Recall {
                r1: 30.0,
                r5: 40.0,
                r10: 50.0,
            },
            Recall::default(),
        );
        let mean = RetrievalRecall::mean(&[a, b]);
        assert_eq!(mean.text_retrieval.r1, 20.0);
        assert_eq!(mean.rsum, 90.0);
        let nan = matrix(&[&[f32::NAN]]);
        assert!(nan.recall(&[0]).unwrap_err().to_string().contains("NaN"));
        assert!(matrix(&[&[1.0]]).recall(&[1]).is_err());
    }
}
