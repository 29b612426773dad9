//! Reading a BUTD checkpoint converted to safetensors (`tools/butd_to_safetensors.py`) under the
//! detectron2 key names of the bottom-up-attention port (airsplay/py-bottom-up-attention,
//! `detectron2/modeling/backbone/resnet.py`, `proposal_generator/rpn.py`,
//! `roi_heads/roi_heads.py`, `roi_heads/fast_rcnn.py`).
//!
//! Every tensor the model needs is taken once by name and shape; whatever is left at the end is
//! an error, so a checkpoint of another architecture cannot load silently.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

/// Why a checkpoint could not be loaded; every variant names the file and, where there is one,
/// the tensor.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The checkpoint path.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The bytes are not a safetensors file.
    #[error("{file}: not a safetensors file: {message}")]
    Format {
        /// The checkpoint path.
        file: String,
        /// What the parser said.
        message: String,
    },
    /// A tensor the model needs is absent.
    #[error("{file}: tensor `{key}` is missing (the model expects shape {expected:?})")]
    Missing {
        /// The checkpoint path.
        file: String,
        /// The detectron2 key.
        key: String,
        /// The shape the model expects.
        expected: Vec<usize>,
    },
    /// A tensor has another shape than the configuration implies.
    #[error("{file}: tensor `{key}` has shape {found:?}, the model expects {expected:?}")]
    Shape {
        /// The checkpoint path.
        file: String,
        /// The detectron2 key.
        key: String,
        /// The stored shape.
        found: Vec<usize>,
        /// The shape the model expects.
        expected: Vec<usize>,
    },
    /// A tensor is stored in a non-float dtype.
    #[error("{file}: tensor `{key}` has dtype {dtype}, expected F32, F64, F16 or BF16")]
    Dtype {
        /// The checkpoint path.
        file: String,
        /// The detectron2 key.
        key: String,
        /// The stored dtype.
        dtype: String,
    },
    /// Tensors the model does not use are present (another architecture or configuration).
    #[error("{file}: {} tensor(s) the model does not use, e.g. {}", keys.len(), keys.iter().take(5).map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "))]
    Unexpected {
        /// The checkpoint path.
        file: String,
        /// The unused keys, sorted.
        keys: Vec<String>,
    },
    /// A tensor is present but its content contradicts the configuration.
    #[error("{file}: tensor `{key}`: {message}")]
    Invalid {
        /// The checkpoint path.
        file: String,
        /// The detectron2 key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// One stored tensor, widened to `f32`.
struct HostTensor {
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// All tensors of a checkpoint, taken out one by one while the model is built.
pub struct WeightStore {
    file: String,
    tensors: BTreeMap<String, HostTensor>,
}

impl WeightStore {
    /// Reads a safetensors file; F32, F64, F16 and BF16 tensors are widened/narrowed to `f32`.
    pub fn open(path: &Path) -> Result<Self, WeightError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| WeightError::Io {
            file: file.clone(),
            source,
        })?;
        Self::from_bytes(file, &bytes)
    }

    /// Parses safetensors `bytes`; `file` names the source in errors.
    pub fn from_bytes(file: String, bytes: &[u8]) -> Result<Self, WeightError> {
        let parsed = SafeTensors::deserialize(bytes).map_err(|e| WeightError::Format {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let mut tensors = BTreeMap::new();
        for (key, view) in parsed.iter() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|b| {
                        f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                    })
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                other => {
                    return Err(WeightError::Dtype {
                        file,
                        key: key.to_owned(),
                        dtype: format!("{other:?}"),
                    });
                }
            };
            tensors.insert(
                key.to_owned(),
                HostTensor {
                    shape: view.shape().to_vec(),
                    values,
                },
            );
        }
        Ok(Self { file, tensors })
    }

    /// The checkpoint path, for messages.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Takes the values of `key`, which must exist with exactly `shape`.
    pub fn take(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>, WeightError> {
        self.take_optional(key, shape)?
            .ok_or_else(|| WeightError::Missing {
                file: self.file.clone(),
                key: key.to_owned(),
                expected: shape.to_vec(),
            })
    }

    /// Takes the values of `key` if it exists; a present tensor must have exactly `shape`.
    pub fn take_optional(
        &mut self,
        key: &str,
        shape: &[usize],
    ) -> Result<Option<Vec<f32>>, WeightError> {
        let Some(tensor) = self.tensors.get(key) else {
            return Ok(None);
        };
        if tensor.shape != shape {
            return Err(WeightError::Shape {
                file: self.file.clone(),
                key: key.to_owned(),
                found: tensor.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        Ok(self.tensors.remove(key).map(|t| t.values))
    }

    /// Takes `key` as a device tensor of `shape`.
    pub fn tensor<B: Backend, const D: usize>(
        &mut self,
        key: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, WeightError> {
        let values = self.take(key, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// An error about the content of `key`.
    pub fn invalid(&self, key: &str, message: String) -> WeightError {
        WeightError::Invalid {
            file: self.file.clone(),
            key: key.to_owned(),
            message,
        }
    }

    /// Succeeds only if every tensor has been taken.
    pub fn finish(self) -> Result<(), WeightError> {
        if self.tensors.is_empty() {
            Ok(())
        } else {
            Err(WeightError::Unexpected {
                file: self.file,
                keys: self.tensors.into_keys().collect(),
            })
        }
    }
}
