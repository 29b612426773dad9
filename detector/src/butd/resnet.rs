//! The caffe-style ResNet of the BUTD detector: a stem (7x7/2 conv, frozen BN, ReLU, caffe max
//! pool) and bottleneck stages with the stride in the first 1x1 conv, as in detectron2's
//! `BasicStem` / `BottleneckBlock` with `STRIDE_IN_1X1: True` and `CAFFE_MAXPOOL: True`
//! (airsplay/py-bottom-up-attention, `detectron2/modeling/backbone/resnet.py`).

use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};

use super::ButdConfig;
use super::weights::{WeightError, WeightStore};

/// A bias-free conv followed by a frozen BatchNorm, folded into one conv with bias at load time:
/// `scale = weight / sqrt(running_var + eps)`, `w' = w * scale`, `b' = bias - running_mean * scale`
/// (detectron2 `layers/batch_norm.py`, `FrozenBatchNorm2d`).
pub struct ConvBn<B: Backend> {
    weight: Tensor<B, 4>,
    bias: Tensor<B, 1>,
    options: ConvOptions<2>,
}

/// Shape and placement of one [`ConvBn`].
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Dilation.
    pub dilation: usize,
}

impl<B: Backend> ConvBn<B> {
    /// Loads `{prefix}.weight` and `{prefix}.norm.{weight,bias,running_mean,running_var}`.
    ///
    /// `running_mean`/`running_var` may both be absent: detectron2's `FrozenBatchNorm2d` then
    /// keeps its identity statistics (mean 0, var 1), as for checkpoints without them.
    pub fn load(
        store: &mut WeightStore,
        prefix: &str,
        spec: ConvSpec,
        eps: f32,
        device: &B::Device,
    ) -> Result<Self, WeightError> {
        let c = spec.out_channels;
        let shape = [c, spec.in_channels, spec.kernel, spec.kernel];
        let mut weight = store.take(&format!("{prefix}.weight"), &shape)?;
        let gamma = store.take(&format!("{prefix}.norm.weight"), &[c])?;
        let beta = store.take(&format!("{prefix}.norm.bias"), &[c])?;
        let mean_key = format!("{prefix}.norm.running_mean");
        let var_key = format!("{prefix}.norm.running_var");
        let mean = store.take_optional(&mean_key, &[c])?;
        let var = store.take_optional(&var_key, &[c])?;
        let (mean, var) = match (mean, var) {
            (Some(m), Some(v)) => (m, v),
            (None, None) => (vec![0.0; c], vec![1.0; c]),
            (Some(_), None) => {
                return Err(WeightError::Missing {
                    file: store.file().to_owned(),
                    key: var_key,
                    expected: vec![c],
                });
            }
            (None, Some(_)) => {
                return Err(WeightError::Missing {
                    file: store.file().to_owned(),
                    key: mean_key,
                    expected: vec![c],
                });
            }
        };
        let per_out = weight.len() / c;
        let mut bias = Vec::with_capacity(c);
        for o in 0..c {
            let scale = f64::from(gamma[o]) / (f64::from(var[o]) + f64::from(eps)).sqrt();
            for w in &mut weight[o * per_out..(o + 1) * per_out] {
                *w = (f64::from(*w) * scale) as f32;
            }
            bias.push((f64::from(beta[o]) - f64::from(mean[o]) * scale) as f32);
        }
        Ok(Self {
            weight: Tensor::from_data(TensorData::new(weight, shape), device),
            bias: Tensor::from_data(TensorData::new(bias, [c]), device),
            options: ConvOptions::new([spec.stride; 2], [spec.padding; 2], [spec.dilation; 2], 1),
        })
    }

    /// Conv + folded BN (no activation).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv2d(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            self.options.clone(),
        )
    }
}

/// Channel widths and placement of one bottleneck block.
#[derive(Debug, Clone, Copy)]
pub struct BlockSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Width of the 1x1 → 3x3 → 1x1 bottleneck.
    pub bottleneck_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Stride, placed in the first 1x1 conv and the shortcut (caffe `STRIDE_IN_1X1`).
    pub stride: usize,
    /// Dilation (and padding) of the 3x3 conv.
    pub dilation: usize,
}

/// detectron2 `BottleneckBlock`: `relu(conv3(relu(conv2(relu(conv1(x))))) + shortcut(x))`, with a
/// projection shortcut only where the channel count changes.
pub struct Bottleneck<B: Backend> {
    conv1: ConvBn<B>,
    conv2: ConvBn<B>,
    conv3: ConvBn<B>,
    shortcut: Option<ConvBn<B>>,
}

impl<B: Backend> Bottleneck<B> {
    /// Loads `{prefix}.conv{1,2,3}` and, if the channels change, `{prefix}.shortcut`.
    pub fn load(
        store: &mut WeightStore,
        prefix: &str,
        spec: BlockSpec,
        eps: f32,
        device: &B::Device,
    ) -> Result<Self, WeightError> {
        let shortcut = if spec.in_channels != spec.out_channels {
            Some(ConvBn::load(
                store,
                &format!("{prefix}.shortcut"),
                ConvSpec {
                    in_channels: spec.in_channels,
                    out_channels: spec.out_channels,
                    kernel: 1,
                    stride: spec.stride,
                    padding: 0,
                    dilation: 1,
                },
                eps,
                device,
            )?)
        } else {
            None
        };
        let conv1 = ConvBn::load(
            store,
            &format!("{prefix}.conv1"),
            ConvSpec {
                in_channels: spec.in_channels,
                out_channels: spec.bottleneck_channels,
                kernel: 1,
                stride: spec.stride,
                padding: 0,
                dilation: 1,
            },
            eps,
            device,
        )?;
        let conv2 = ConvBn::load(
            store,
            &format!("{prefix}.conv2"),
            ConvSpec {
                in_channels: spec.bottleneck_channels,
                out_channels: spec.bottleneck_channels,
                kernel: 3,
                stride: 1,
                padding: spec.dilation,
                dilation: spec.dilation,
            },
            eps,
            device,
        )?;
        let conv3 = ConvBn::load(
            store,
            &format!("{prefix}.conv3"),
            ConvSpec {
                in_channels: spec.bottleneck_channels,
                out_channels: spec.out_channels,
                kernel: 1,
                stride: 1,
                padding: 0,
                dilation: 1,
            },
            eps,
            device,
        )?;
        Ok(Self {
            conv1,
            conv2,
            conv3,
            shortcut,
        })
    }

    /// One residual block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let out = relu(self.conv1.forward(x.clone()));
        let out = relu(self.conv2.forward(out));
        let out = self.conv3.forward(out);
        let shortcut = match &self.shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        relu(out + shortcut)
    }
}

/// A sequence of bottleneck blocks (`res2` … `res5`).
pub struct Stage<B: Backend> {
    blocks: Vec<Bottleneck<B>>,
}

impl<B: Backend> Stage<B> {
    /// Loads `{prefix}.0` … `{prefix}.{n-1}`; the first block gets `first` (stride, channel
    /// change), the others keep the output width with stride 1 (detectron2 `make_stage`).
    pub fn load(
        store: &mut WeightStore,
        prefix: &str,
        num_blocks: usize,
        first: BlockSpec,
        eps: f32,
        device: &B::Device,
    ) -> Result<Self, WeightError> {
        let mut blocks = Vec::with_capacity(num_blocks);
        for i in 0..num_blocks {
            let spec = if i == 0 {
                first
            } else {
                BlockSpec {
                    in_channels: first.out_channels,
                    stride: 1,
                    ..first
                }
            };
            blocks.push(Bottleneck::load(
                store,
                &format!("{prefix}.{i}"),
                spec,
                eps,
                device,
            )?);
        }
        Ok(Self { blocks })
    }

    /// All blocks in order.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.blocks.iter().fold(x, |x, block| block.forward(x))
    }
}

/// Outputs of every backbone stage for one image (`[1, C, H, W]` each).
pub struct BackboneFeatures<B: Backend> {
    /// After the stem (stride 4).
    pub stem: Tensor<B, 4>,
    /// `res2` (stride 4).
    pub res2: Tensor<B, 4>,
    /// `res3` (stride 8).
    pub res3: Tensor<B, 4>,
    /// `res4` (stride 16), the input of the RPN and the RoI pooler.
    pub res4: Tensor<B, 4>,
}

/// The C4 backbone: stem, `res2`, `res3`, `res4` (`MODEL.RESNETS.OUT_FEATURES: ["res4"]`).
pub struct ResNetC4<B: Backend> {
    stem: ConvBn<B>,
    res2: Stage<B>,
    res3: Stage<B>,
    res4: Stage<B>,
}

impl<B: Backend> ResNetC4<B> {
    /// Loads `backbone.stem.conv1` and `backbone.res{2,3,4}.*` (detectron2
    /// `build_resnet_backbone`: `res2` stride 1, then stride 2; channels double per stage).
    pub fn load(
        store: &mut WeightStore,
        config: &ButdConfig,
        device: &B::Device,
    ) -> Result<Self, WeightError> {
        let eps = config.bn_eps;
        let stem = ConvBn::load(
            store,
            "backbone.stem.conv1",
            ConvSpec {
                in_channels: 3,
                out_channels: config.stem_out_channels,
                kernel: 7,
                stride: 2,
                padding: 3,
                dilation: 1,
            },
            eps,
            device,
        )?;
        let mut in_channels = config.stem_out_channels;
        let mut out_channels = config.res2_out_channels;
        let mut bottleneck = config.res2_bottleneck_channels;
        let mut stages = Vec::with_capacity(3);
        for (idx, &num_blocks) in config.blocks_per_stage.iter().enumerate() {
            let first = BlockSpec {
                in_channels,
                bottleneck_channels: bottleneck,
                out_channels,
                stride: if idx == 0 { 1 } else { 2 },
                dilation: 1,
            };
            stages.push(Stage::load(
                store,
                &format!("backbone.res{}", idx + 2),
                num_blocks,
                first,
                eps,
                device,
            )?);
            in_channels = out_channels;
            out_channels *= 2;
            bottleneck *= 2;
        }
        let res4 = stages.pop().expect("three stages");
        let res3 = stages.pop().expect("three stages");
        let res2 = stages.pop().expect("three stages");
        Ok(Self {
            stem,
            res2,
            res3,
            res4,
        })
    }

    /// Runs the stem (conv, ReLU, 3x3/2 max pool with padding 0 and `ceil_mode`, the caffe
    /// pooling of `BasicStem` with `caffe_maxpool`) and the three stages.
    pub fn forward(&self, x: Tensor<B, 4>) -> BackboneFeatures<B> {
        let x = relu(self.stem.forward(x));
        let stem = max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], true);
        let res2 = self.res2.forward(stem.clone());
        let res3 = self.res3.forward(res2.clone());
        let res4 = self.res4.forward(res3.clone());
        BackboneFeatures {
            stem,
            res2,
            res3,
            res4,
        }
    }
}
