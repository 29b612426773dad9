//! Reading a TensorFlow.js graph model: the `model.json` topology (a TensorFlow `GraphDef` in
//! JSON) and its weight files as listed in `weightsManifest`.
//!
//! Weights are laid out back to back in the manifest's files, in manifest order. A weight stored
//! with `quantization: {dtype: float16}` is a float32 tensor kept as IEEE half floats; it is
//! decoded to f32 exactly as tfjs does (`io.decodeWeights`). Attribute strings (`padding`,
//! `fused_ops`, `data_format`) are base64 in the JSON.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::Value;

/// One node of the graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// Unique node name.
    pub name: String,
    /// TensorFlow op name (`_FusedConv2D`, `Mul`, ...).
    pub op: String,
    /// Input node names; `name:1` is the second output of `name`.
    pub inputs: Vec<String>,
    attrs: serde_json::Map<String, Value>,
}

impl Node {
    /// A string attribute (base64-decoded), e.g. `padding`.
    pub fn attr_string(&self, key: &str) -> Result<String> {
        let encoded = self
            .attrs
            .get(key)
            .and_then(|v| v.get("s"))
            .and_then(Value::as_str)
            .with_context(|| format!("node {}: no string attribute `{key}`", self.name))?;
        decode_base64(encoded).with_context(|| format!("node {}: attribute `{key}`", self.name))
    }

    /// A list-of-strings attribute (each base64-decoded), e.g. `fused_ops`; empty when absent.
    pub fn attr_strings(&self, key: &str) -> Result<Vec<String>> {
        let Some(list) = self
            .attrs
            .get(key)
            .and_then(|v| v.get("list"))
            .and_then(|l| l.get("s"))
            .and_then(Value::as_array)
        else {
            return Ok(Vec::new());
        };
        list.iter()
            .map(|v| {
                let encoded = v.as_str().context("not a string")?;
                decode_base64(encoded)
            })
            .collect::<Result<_>>()
            .with_context(|| format!("node {}: attribute `{key}`", self.name))
    }

    /// A list-of-integers attribute, e.g. `strides`; empty when absent.
    pub fn attr_ints(&self, key: &str) -> Result<Vec<i64>> {
        let Some(list) = self
            .attrs
            .get(key)
            .and_then(|v| v.get("list"))
            .and_then(|l| l.get("i"))
            .and_then(Value::as_array)
        else {
            return Ok(Vec::new());
        };
        list.iter()
            .map(|v| int_value(v).context("not an integer"))
            .collect::<Result<_>>()
            .with_context(|| format!("node {}: attribute `{key}`", self.name))
    }

    /// A shape attribute (`{"shape": {"dim": [{"size": "1"}, ...]}}`), e.g. a placeholder's.
    pub fn attr_shape(&self, key: &str) -> Result<Vec<usize>> {
        self.attrs
            .get(key)
            .and_then(|v| v.pointer("/shape/dim"))
            .and_then(Value::as_array)
            .with_context(|| format!("node {}: no shape attribute `{key}`", self.name))?
            .iter()
            .map(|d| {
                d.get("size")
                    .and_then(int_value)
                    .and_then(|n| usize::try_from(n).ok())
                    .with_context(|| format!("node {}: dimension {d} is not static", self.name))
            })
            .collect()
    }

    /// A boolean attribute, `false` when absent.
    pub fn attr_bool(&self, key: &str) -> bool {
        self.attrs
            .get(key)
            .and_then(|v| v.get("b"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

fn int_value(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => s.parse().ok(),
        other => other.as_i64(),
    }
}

fn decode_base64(encoded: &str) -> Result<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .context("invalid base64")?;
    String::from_utf8(bytes).context("not UTF-8")
}

/// The values of one weight tensor.
#[derive(Debug, Clone)]
pub enum WeightData {
    /// Float weights (decoded from f16 where quantized).
    F32(Vec<f32>),
    /// Integer weights (shapes, axes, constants).
    I32(Vec<i32>),
}

/// One weight tensor from the manifest.
#[derive(Debug, Clone)]
pub struct Weight {
    /// Shape as stored (TensorFlow layout, e.g. HWIO for convolutions).
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: WeightData,
}

impl Weight {
    /// The float values, or an error naming the weight when it holds integers.
    pub fn floats(&self, name: &str) -> Result<&[f32]> {
        match &self.data {
            WeightData::F32(values) => Ok(values),
            WeightData::I32(_) => bail!("weight {name} holds integers, floats expected"),
        }
    }

    /// The integer values, or an error naming the weight when it holds floats.
    pub fn ints(&self, name: &str) -> Result<&[i32]> {
        match &self.data {
            WeightData::I32(values) => Ok(values),
            WeightData::F32(_) => bail!("weight {name} holds floats, integers expected"),
        }
    }
}

/// A TF.js graph model: nodes in file order and every weight by name.
#[derive(Debug, Clone)]
pub struct GraphModel {
    /// Graph nodes in the order the file lists them.
    pub nodes: Vec<Node>,
    /// Weights by node name.
    pub weights: HashMap<String, Weight>,
}

impl GraphModel {
    /// Loads `model.json` and the weight files it names (resolved next to it).
    pub fn load(json_path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(json_path)
            .with_context(|| format!("reading TF.js model {}", json_path.display()))?;
        let dir = json_path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, |file| {
            let path = dir.join(file);
            std::fs::read(&path).with_context(|| format!("reading weights {}", path.display()))
        })
        .with_context(|| format!("loading TF.js model {}", json_path.display()))
    }

    /// Parses a model from its JSON text, reading weight files through `read_file`.
    pub fn parse(json: &str, read_file: impl Fn(&str) -> Result<Vec<u8>>) -> Result<Self> {
        let root: Value = serde_json::from_str(json).context("model JSON does not parse")?;
        if root.get("format").and_then(Value::as_str) != Some("graph-model") {
            bail!("not a TF.js graph model (`format` is not `graph-model`)");
        }
        let nodes = root
            .pointer("/modelTopology/node")
            .and_then(Value::as_array)
            .context("no `modelTopology.node` list")?
            .iter()
            .map(parse_node)
            .collect::<Result<Vec<_>>>()?;
        let mut weights = HashMap::new();
        let groups = root
            .get("weightsManifest")
            .and_then(Value::as_array)
            .context("no `weightsManifest`")?;
        for group in groups {
            let mut bytes = Vec::new();
            for path in group
                .get("paths")
                .and_then(Value::as_array)
                .context("manifest group without `paths`")?
            {
                let path = path.as_str().context("manifest path is not a string")?;
                bytes.extend(read_file(path)?);
            }
            let mut offset = 0usize;
            for spec in group
                .get("weights")
                .and_then(Value::as_array)
                .context("manifest group without `weights`")?
            {
                let (name, weight, used) = parse_weight(spec, &bytes[offset.min(bytes.len())..])?;
                offset += used;
                weights.insert(name, weight);
            }
            if offset != bytes.len() {
                bail!(
                    "weight files hold {} bytes but the manifest describes {offset}",
                    bytes.len()
                );
            }
        }
        Ok(Self { nodes, weights })
    }

    /// The weight named `name`, or an error naming it.
    pub fn weight(&self, name: &str) -> Result<&Weight> {
        self.weights
            .get(name)
            .with_context(|| format!("the model has no weight `{name}`"))
    }
}

fn parse_node(value: &Value) -> Result<Node> {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let name = text("name").context("graph node without a name")?;
    let op = text("op").with_context(|| format!("node {name} has no op"))?;
    let inputs = value
        .get("input")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let attrs = value
        .get("attr")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    Ok(Node {
        name,
        op,
        inputs,
        attrs,
    })
}

/// Parses one manifest entry and decodes its values from the front of `bytes`; returns the name,
/// the weight and how many bytes it used.
fn parse_weight(spec: &Value, bytes: &[u8]) -> Result<(String, Weight, usize)> {
    let name = spec
        .get("name")
        .and_then(Value::as_str)
        .context("manifest weight without a name")?
        .to_owned();
    let shape = spec
        .get("shape")
        .and_then(Value::as_array)
        .with_context(|| format!("weight {name}: no shape"))?
        .iter()
        .map(|d| {
            int_value(d)
                .and_then(|d| usize::try_from(d).ok())
                .with_context(|| format!("weight {name}: bad dimension {d}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let count: usize = shape.iter().product();
    let dtype = spec.get("dtype").and_then(Value::as_str).unwrap_or("");
    let stored = spec
        .pointer("/quantization/dtype")
        .and_then(Value::as_str)
        .unwrap_or(dtype);
    let width = match stored {
        "float16" => 2,
        "float32" | "int32" => 4,
        other => bail!("weight {name}: unsupported stored dtype `{other}`"),
    };
    let used = count * width;
    if bytes.len() < used {
        bail!(
            "weight {name}: needs {used} bytes, the weight files end after {}",
            bytes.len()
        );
    }
    let raw = &bytes[..used];
    let data = match (dtype, stored) {
        ("float32", "float16") => WeightData::F32(
            raw.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        ("float32", "float32") => WeightData::F32(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        ("int32", "int32") => WeightData::I32(
            raw.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        (dtype, stored) => {
            bail!("weight {name}: dtype {dtype} stored as {stored} is not supported")
        }
    };
    Ok((name, Weight { shape, data }, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(weights_json: &str, bytes: Vec<u8>) -> Result<GraphModel> {
        let json = format!(
            r#"{{"format":"graph-model","modelTopology":{{"node":[{{"name":"x","op":"Placeholder","attr":{{"padding":{{"s":"U0FNRQ=="}},"strides":{{"list":{{"i":["1","2"]}}}}}}}}]}},
               "weightsManifest":[{{"paths":["w.bin"],"weights":{weights_json}}}]}}"#
        );
        GraphModel::parse(&json, move |_| Ok(bytes.clone()))
    }

    #[test]
    fn half_float_and_integer_weights_decode_in_manifest_order() {
        let mut bytes = Vec::new();
        for v in [1.0f32, -0.5, 1.0 / 6.0] {
            bytes.extend(half::f16::from_f32(v).to_le_bytes());
        }
        bytes.extend(7i32.to_le_bytes());
        bytes.extend((-3i32).to_le_bytes());
        let m = model(
            r#"[{"name":"a","shape":[3],"dtype":"float32","quantization":{"dtype":"float16"}},
                {"name":"b","shape":[2],"dtype":"int32"}]"#,
            bytes,
        )
        .unwrap();
        let a = m.weight("a").unwrap().floats("a").unwrap();
        // 1/6 is not representable in f16: tfjs (and so the model) uses 0.1666259765625.
        assert_eq!(a, &[1.0, -0.5, 0.166_625_98]);
        assert_eq!(m.weight("b").unwrap().ints("b").unwrap(), &[7, -3]);
        let node = &m.nodes[0];
        assert_eq!(node.attr_string("padding").unwrap(), "SAME");
        assert_eq!(node.attr_ints("strides").unwrap(), vec![1, 2]);
        assert!(
            m.weight("missing")
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }

    #[test]
    fn a_short_weight_file_is_an_error_naming_the_weight() {
        let error = model(
            r#"[{"name":"big","shape":[4,4],"dtype":"float32"}]"#,
            vec![0; 10],
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("weight big"), "{error:#}");
        let error = model(r#"[{"name":"a","shape":[1],"dtype":"int32"}]"#, vec![0; 8]).unwrap_err();
        assert!(
            format!("{error:#}").contains("manifest describes 4"),
            "{error:#}"
        );
    }
}
