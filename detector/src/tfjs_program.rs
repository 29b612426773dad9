//! Running a TF.js graph model with Burn: the part of the graph between the input placeholder and
//! the requested output nodes is compiled once into a list of steps with device-resident weights,
//! then executed for a batch of any size.
//!
//! Layout: TensorFlow graphs are NHWC; here every activation is NCHW (Burn's convolution layout),
//! so weights are transposed once at compile time (HWIO -> OIHW, depthwise HWC1 -> C1HW) and
//! channel-axis attributes are remapped. Only the ops the supported models use are implemented;
//! any other op, or an attribute value outside what is implemented, is refused at compile time
//! with the node's name.
//!
//! Semantics followed (TensorFlow's, as tfjs implements them):
//! * `SAME` padding: `out = ceil(in / stride)`, total padding `max((out-1)*stride + k - in, 0)`,
//!   the smaller half first (top/left), the extra row/column at the bottom/right.
//! * `ResizeBilinear` with `align_corners=false, half_pixel_centers=false` (the legacy asymmetric
//!   sampling: source `y = out_y * in/out`), implemented for exact 2x upsampling.
//! * `Relu6` = `clamp(x, 0, 6)`; `Mean` over the spatial axes keeps dims.

use std::collections::HashMap;

use anyhow::{Context, Result, bail, ensure};
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PaddedConvOptions};
use burn::tensor::{Tensor, TensorData};

use crate::tfjs::{GraphModel, Node};

/// A binary operand: a graph value or a scalar constant.
#[derive(Debug, Clone, Copy)]
enum Operand {
    Value(usize),
    Scalar(f32),
}

#[derive(Debug, Clone, Copy)]
enum BinaryOp {
    Add,
    Sub,
    Mul,
}

#[derive(Debug, Clone, Copy)]
enum UnaryOp {
    Relu,
    Relu6,
    Sigmoid,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Padding {
    Same,
    Valid,
}

/// One compiled convolution (regular or depthwise) with its optional bias and ReLU.
#[derive(Debug, Clone)]
struct Conv<B: Backend> {
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: Padding,
    groups: usize,
    relu: bool,
}

#[derive(Debug, Clone)]
enum Step<B: Backend> {
    Conv {
        input: usize,
        conv: Conv<B>,
    },
    Binary {
        op: BinaryOp,
        lhs: Operand,
        rhs: Operand,
    },
    Unary {
        op: UnaryOp,
        input: usize,
    },
    MeanSpatial {
        input: usize,
    },
    Upsample2x {
        input: usize,
    },
    ConcatChannels {
        inputs: Vec<usize>,
    },
    Identity {
        input: usize,
    },
}

/// A compiled graph: steps in execution order, each producing the value with the step's index.
#[derive(Debug, Clone)]
pub struct Program<B: Backend> {
    steps: Vec<Step<B>>,
    /// Value indices of the requested outputs.
    outputs: Vec<usize>,
    /// For each value, the index of the last step that reads it (or `usize::MAX` for outputs).
    last_use: Vec<usize>,
}

/// Value index 0 is the input; step `i` produces value `i + 1`.
const INPUT: usize = 0;

impl<B: Backend> Program<B> {
    /// Compiles the subgraph that computes `outputs` from the placeholder `input`.
    pub fn compile(
        model: &GraphModel,
        input: &str,
        outputs: &[&str],
        device: &B::Device,
    ) -> Result<Self> {
        let by_name: HashMap<&str, &Node> =
            model.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let mut compiler = Compiler {
            model,
            by_name,
            input,
            device,
            index: HashMap::new(),
            sizes: Vec::new(),
            steps: Vec::new(),
        };
        compiler.sizes.push(compiler.input_size()?);
        let outputs = outputs
            .iter()
            .map(|name| compiler.value(name))
            .collect::<Result<Vec<_>>>()?;
        let steps = compiler.steps;
        let mut last_use = vec![0usize; steps.len() + 1];
        for (i, step) in steps.iter().enumerate() {
            for read in step_inputs(step) {
                last_use[read] = i;
            }
        }
        for &o in &outputs {
            last_use[o] = usize::MAX;
        }
        Ok(Self {
            steps,
            outputs,
            last_use,
        })
    }

    /// Runs the program on an NCHW batch; returns the requested outputs in order.
    pub fn run(&self, input: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let mut values: Vec<Option<Tensor<B, 4>>> = vec![None; self.steps.len() + 1];
        values[INPUT] = Some(input);
        for (i, step) in self.steps.iter().enumerate() {
            let get = |v: usize| values[v].clone().expect("value computed before use");
            let out = match step {
                Step::Conv { input, conv } => run_conv(get(*input), conv),
                Step::Binary { op, lhs, rhs } => {
                    binary(*op, lhs.map_value(&get), rhs.map_value(&get))
                }
                Step::Unary { op, input } => {
                    let x = get(*input);
                    match op {
                        UnaryOp::Relu => burn::tensor::activation::relu(x),
                        UnaryOp::Relu6 => x.clamp(0.0, 6.0),
                        UnaryOp::Sigmoid => burn::tensor::activation::sigmoid(x),
                    }
                }
                Step::MeanSpatial { input } => get(*input).mean_dim(2).mean_dim(3),
                Step::Upsample2x { input } => upsample2x(get(*input)),
                Step::ConcatChannels { inputs } => {
                    Tensor::cat(inputs.iter().map(|&v| get(v)).collect(), 1)
                }
                Step::Identity { input } => get(*input),
            };
            values[i + 1] = Some(out);
            for read in step_inputs(step) {
                if self.last_use[read] == i {
                    values[read] = None;
                }
            }
        }
        self.outputs
            .iter()
            .map(|&o| values[o].clone().expect("output computed"))
            .collect()
    }
}

/// A resolved operand: a tensor or a scalar.
enum Resolved<B: Backend> {
    Tensor(Tensor<B, 4>),
    Scalar(f32),
}

impl Operand {
    fn map_value<B: Backend>(self, get: &impl Fn(usize) -> Tensor<B, 4>) -> Resolved<B> {
        match self {
            Operand::Value(v) => Resolved::Tensor(get(v)),
            Operand::Scalar(s) => Resolved::Scalar(s),
        }
    }
}

fn binary<B: Backend>(op: BinaryOp, lhs: Resolved<B>, rhs: Resolved<B>) -> Tensor<B, 4> {
    match (lhs, rhs) {
        (Resolved::Tensor(a), Resolved::Tensor(b)) => {
            let (a, b) = broadcast_pair(a, b);
            match op {
                BinaryOp::Add => a + b,
                BinaryOp::Sub => a - b,
                BinaryOp::Mul => a * b,
            }
        }
        (Resolved::Tensor(a), Resolved::Scalar(s)) => match op {
            BinaryOp::Add => a.add_scalar(s),
            BinaryOp::Sub => a.sub_scalar(s),
            BinaryOp::Mul => a.mul_scalar(s),
        },
        (Resolved::Scalar(s), Resolved::Tensor(b)) => match op {
            BinaryOp::Add => b.add_scalar(s),
            BinaryOp::Sub => b.neg().add_scalar(s),
            BinaryOp::Mul => b.mul_scalar(s),
        },
        (Resolved::Scalar(_), Resolved::Scalar(_)) => {
            unreachable!("scalar-scalar ops are refused at compile time")
        }
    }
}

/// Expands size-1 dimensions so both tensors have the same shape (NumPy broadcasting).
fn broadcast_pair<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let (da, db) = (a.dims(), b.dims());
    if da == db {
        return (a, b);
    }
    let shape: [usize; 4] = std::array::from_fn(|i| da[i].max(db[i]));
    (a.expand(shape), b.expand(shape))
}

fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

fn run_conv<B: Backend>(x: Tensor<B, 4>, conv: &Conv<B>) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    let (start, end) = match conv.padding {
        Padding::Valid => ([0, 0], [0, 0]),
        Padding::Same => {
            let (top, bottom) = same_padding(h, conv.kernel[0], conv.stride[0]);
            let (left, right) = same_padding(w, conv.kernel[1], conv.stride[1]);
            ([top, left], [bottom, right])
        }
    };
    let options: PaddedConvOptions<2> = if start == end {
        ConvOptions::new(conv.stride, start, [1, 1], conv.groups).into()
    } else {
        PaddedConvOptions::asymmetric(conv.stride, start, end, [1, 1], conv.groups)
    };
    let y = conv2d(x, conv.weight.clone(), conv.bias.clone(), options);
    if conv.relu {
        burn::tensor::activation::relu(y)
    } else {
        y
    }
}

/// Exact 2x upsampling with TensorFlow's legacy asymmetric bilinear sampling: output row `2k` is
/// input row `k`, row `2k+1` is the mean of rows `k` and `min(k+1, n-1)`; same for columns.
fn upsample2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let x = upsample_axis(x, 2);
    upsample_axis(x, 3)
}

fn upsample_axis<B: Backend>(x: Tensor<B, 4>, axis: usize) -> Tensor<B, 4> {
    let dims = x.dims();
    let n = dims[axis];
    let next = if n > 1 {
        Tensor::cat(
            vec![
                x.clone().narrow(axis, 1, n - 1),
                x.clone().narrow(axis, n - 1, 1),
            ],
            axis,
        )
    } else {
        x.clone()
    };
    let mid = (x.clone() + next).mul_scalar(0.5);
    let stacked: Tensor<B, 5> = Tensor::stack(vec![x, mid], axis + 1);
    let mut shape = dims;
    shape[axis] = 2 * n;
    stacked.reshape(shape)
}

fn step_inputs<B: Backend>(step: &Step<B>) -> Vec<usize> {
    let operand = |o: &Operand| match o {
        Operand::Value(v) => Some(*v),
        Operand::Scalar(_) => None,
    };
    match step {
        Step::Conv { input, .. }
        | Step::Unary { input, .. }
        | Step::MeanSpatial { input }
        | Step::Upsample2x { input }
        | Step::Identity { input } => vec![*input],
        Step::Binary { lhs, rhs, .. } => {
            [operand(lhs), operand(rhs)].into_iter().flatten().collect()
        }
        Step::ConcatChannels { inputs } => inputs.clone(),
    }
}

struct Compiler<'a, B: Backend> {
    model: &'a GraphModel,
    by_name: HashMap<&'a str, &'a Node>,
    input: &'a str,
    device: &'a B::Device,
    /// Node name -> value index.
    index: HashMap<String, usize>,
    /// Spatial size (height, width) of every value, by value index.
    sizes: Vec<(usize, usize)>,
    steps: Vec<Step<B>>,
}

impl<B: Backend> Compiler<'_, B> {
    /// The value index of node `name`, compiling it (and what it reads) on first use.
    fn value(&mut self, name: &str) -> Result<usize> {
        if name == self.input {
            return Ok(INPUT);
        }
        if let Some(&v) = self.index.get(name) {
            return Ok(v);
        }
        let node = *self
            .by_name
            .get(name)
            .with_context(|| format!("the graph has no node `{name}`"))?;
        let step = self
            .step(node)
            .with_context(|| format!("compiling node {} ({})", node.name, node.op))?;
        let size = self.size_of(&step);
        self.steps.push(step);
        self.sizes.push(size);
        let v = self.steps.len();
        self.index.insert(name.to_owned(), v);
        Ok(v)
    }

    fn operand(&mut self, name: &str) -> Result<Operand> {
        if let Some(node) = self.by_name.get(name)
            && node.op == "Const"
        {
            let weight = self.model.weight(name)?;
            let values = weight.floats(name)?;
            ensure!(
                values.len() == 1,
                "constant {name} has shape {:?}; only scalar constants are supported as operands",
                weight.shape
            );
            return Ok(Operand::Scalar(values[0]));
        }
        Ok(Operand::Value(self.value(name)?))
    }

    fn step(&mut self, node: &Node) -> Result<Step<B>> {
        let arg = |i: usize| -> Result<&str> {
            node.inputs
                .get(i)
                .map(String::as_str)
                .with_context(|| format!("missing input {i}"))
        };
        Ok(match node.op.as_str() {
            "_FusedConv2D" | "FusedDepthwiseConv2dNative" | "DepthwiseConv2dNative" | "Conv2D" => {
                let input = self.value(arg(0)?)?;
                let conv = self.conv(node)?;
                Step::Conv { input, conv }
            }
            "Add" | "AddV2" | "Sub" | "Mul" => {
                let op = match node.op.as_str() {
                    "Sub" => BinaryOp::Sub,
                    "Mul" => BinaryOp::Mul,
                    _ => BinaryOp::Add,
                };
                let lhs = self.operand(arg(0)?)?;
                let rhs = self.operand(arg(1)?)?;
                ensure!(
                    matches!(lhs, Operand::Value(_)) || matches!(rhs, Operand::Value(_)),
                    "both operands are constants"
                );
                Step::Binary { op, lhs, rhs }
            }
            "Relu" | "Relu6" | "Sigmoid" => {
                let op = match node.op.as_str() {
                    "Relu" => UnaryOp::Relu,
                    "Relu6" => UnaryOp::Relu6,
                    _ => UnaryOp::Sigmoid,
                };
                Step::Unary {
                    op,
                    input: self.value(arg(0)?)?,
                }
            }
            "Mean" => {
                let axes = self.model.weight(arg(1)?)?.ints(arg(1)?)?.to_vec();
                ensure!(
                    axes == [1, 2] && node.attr_bool("keep_dims"),
                    "only the spatial mean (axes [1, 2], keep_dims) is supported, got {axes:?}"
                );
                Step::MeanSpatial {
                    input: self.value(arg(0)?)?,
                }
            }
            "ResizeBilinear" => {
                ensure!(
                    !node.attr_bool("align_corners") && !node.attr_bool("half_pixel_centers"),
                    "only align_corners=false, half_pixel_centers=false is supported"
                );
                let input = self.value(arg(0)?)?;
                let size = self.model.weight(arg(1)?)?.ints(arg(1)?)?.to_vec();
                let (height, width) = self.sizes[input];
                ensure!(
                    size == [2 * height as i32, 2 * width as i32],
                    "only exact 2x upsampling is supported: {height}x{width} -> {size:?}"
                );
                Step::Upsample2x { input }
            }
            "ConcatV2" => {
                let (axis_name, parts) = node.inputs.split_last().context("no inputs")?;
                let axis = self.model.weight(axis_name)?.ints(axis_name)?.to_vec();
                ensure!(
                    axis == [3] || axis == [-1],
                    "only concatenation on the channel axis is supported, got {axis:?}"
                );
                let inputs = parts
                    .iter()
                    .map(|p| self.value(p))
                    .collect::<Result<Vec<_>>>()?;
                Step::ConcatChannels { inputs }
            }
            "Identity" => Step::Identity {
                input: self.value(arg(0)?)?,
            },
            other => bail!("op {other} is not supported"),
        })
    }

    fn input_size(&self) -> Result<(usize, usize)> {
        let node = self
            .by_name
            .get(self.input)
            .with_context(|| format!("no input node {}", self.input))?;
        let dims = node
            .attr_shape("shape")
            .with_context(|| format!("input {} has no static shape", self.input))?;
        ensure!(dims.len() == 4, "input shape {dims:?} is not NHWC");
        Ok((dims[1], dims[2]))
    }

    /// Spatial size of the value a step produces, from the sizes of what it reads.
    fn size_of(&self, step: &Step<B>) -> (usize, usize) {
        let size = |v: usize| self.sizes[v];
        match step {
            Step::Conv { input, conv } => {
                let (h, w) = size(*input);
                let out = |n: usize, k: usize, s: usize| match conv.padding {
                    Padding::Same => n.div_ceil(s),
                    Padding::Valid => (n.saturating_sub(k)) / s + 1,
                };
                (
                    out(h, conv.kernel[0], conv.stride[0]),
                    out(w, conv.kernel[1], conv.stride[1]),
                )
            }
            Step::Binary { lhs, rhs, .. } => {
                let of = |o: &Operand| match o {
                    Operand::Value(v) => size(*v),
                    Operand::Scalar(_) => (1, 1),
                };
                let (a, b) = (of(lhs), of(rhs));
                (a.0.max(b.0), a.1.max(b.1))
            }
            Step::Unary { input, .. } | Step::Identity { input } => size(*input),
            Step::MeanSpatial { .. } => (1, 1),
            Step::Upsample2x { input } => {
                let (h, w) = size(*input);
                (2 * h, 2 * w)
            }
            Step::ConcatChannels { inputs } => size(inputs[0]),
        }
    }

    fn conv(&mut self, node: &Node) -> Result<Conv<B>> {
        let depthwise = node.op.contains("Depthwise");
        let weight_name = node.inputs.get(1).context("no filter input")?;
        let weight = self.model.weight(weight_name)?;
        let filter = weight.floats(weight_name)?;
        ensure!(weight.shape.len() == 4, "filter {weight_name} is not 4-d");
        let [kh, kw, cin, cout] = [
            weight.shape[0],
            weight.shape[1],
            weight.shape[2],
            weight.shape[3],
        ];
        // TF HWIO (or HWC·multiplier for depthwise) -> Burn OIHW with groups.
        let (out_channels, in_per_group, groups) = if depthwise {
            ensure!(
                cout == 1,
                "depthwise channel multiplier {cout} is not supported"
            );
            (cin, 1, cin)
        } else {
            (cout, cin, 1)
        };
        let mut oihw = vec![0f32; filter.len()];
        for y in 0..kh {
            for x in 0..kw {
                for i in 0..cin {
                    for o in 0..cout {
                        let src = ((y * kw + x) * cin + i) * cout + o;
                        let (oc, ic) = if depthwise { (i, 0) } else { (o, i) };
                        oihw[((oc * in_per_group + ic) * kh + y) * kw + x] = filter[src];
                    }
                }
            }
        }
        let weight = Tensor::from_data(
            TensorData::new(oihw, [out_channels, in_per_group, kh, kw]),
            self.device,
        );
        let fused = node.attr_strings("fused_ops")?;
        let fused: Vec<&str> = fused.iter().map(String::as_str).collect();
        let (has_bias, relu) = match fused.as_slice() {
            [] => (false, false),
            ["BiasAdd"] => (true, false),
            ["BiasAdd", "Relu"] => (true, true),
            other => bail!("fused ops {other:?} are not supported"),
        };
        let bias = if has_bias {
            let name = node.inputs.get(2).context("no bias input")?;
            let values = self.model.weight(name)?.floats(name)?;
            ensure!(
                values.len() == out_channels,
                "bias {name} has {} values for {out_channels} channels",
                values.len()
            );
            Some(Tensor::from_data(
                TensorData::new(values.to_vec(), [out_channels]),
                self.device,
            ))
        } else {
            None
        };
        let strides = node.attr_ints("strides")?;
        ensure!(
            strides.len() == 4 && strides[0] == 1 && strides[3] == 1,
            "strides {strides:?} are not NHWC spatial strides"
        );
        let dilations = node.attr_ints("dilations")?;
        ensure!(
            dilations.iter().all(|&d| d == 1),
            "dilations {dilations:?} are not supported"
        );
        if let Ok(format) = node.attr_string("data_format") {
            ensure!(format == "NHWC", "data format {format} is not supported");
        }
        let padding = match node.attr_string("padding")?.as_str() {
            "SAME" => Padding::Same,
            "VALID" => Padding::Valid,
            other => bail!("padding {other} is not supported"),
        };
        Ok(Conv {
            weight,
            bias,
            kernel: [kh, kw],
            stride: [strides[1] as usize, strides[2] as usize],
            padding,
            groups,
            relu,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = burn::backend::NdArray<f32>;

    #[test]
    fn same_padding_puts_the_extra_row_at_the_end() {
        assert_eq!(same_padding(512, 3, 2), (0, 1));
        assert_eq!(same_padding(512, 3, 1), (1, 1));
        assert_eq!(same_padding(128, 5, 2), (1, 2));
        assert_eq!(same_padding(7, 1, 1), (0, 0));
    }

    #[test]
    fn upsampling_follows_tensorflow_asymmetric_bilinear() {
        let device = Default::default();
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 5.0, 4.0, 8.0, 6.0], [1, 1, 2, 3]),
            &device,
        );
        let y: Vec<f32> = upsample2x(x).into_data().to_vec().unwrap();
        // Rows: r0, (r0+r1)/2, r1, r1 (the last row repeats: min(k+1, n-1)); within a row the
        // same rule on columns.
        let expected = [
            [1.0, 1.5, 2.0, 3.5, 5.0, 5.0],
            [2.5, 3.75, 5.0, 5.25, 5.5, 5.5],
            [4.0, 6.0, 8.0, 7.0, 6.0, 6.0],
            [4.0, 6.0, 8.0, 7.0, 6.0, 6.0],
        ];
        assert_eq!(y, expected.concat());
    }
}
