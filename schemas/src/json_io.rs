//! JSON side files: the identity is checked before the body is parsed, so a file of another
//! schema or version gets that error rather than a confusing field error.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::identity::SchemaId;
use crate::{Result, SchemaError};

/// Parses `bytes` as schema `id`, naming `file` in every error.
pub(crate) fn parse<T: DeserializeOwned>(file: &str, bytes: &[u8], id: SchemaId) -> Result<T> {
    let json = |source| SchemaError::Json {
        file: file.to_owned(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(json)?;
    let field = |key: &str| match value.get(key) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let missing = |key: &str| SchemaError::MissingMetadata {
        file: file.to_owned(),
        key: key.to_owned(),
        expected: id.name.to_owned(),
    };
    let name = field("schema").ok_or_else(|| missing("schema"))?;
    let version = field("schema_version").ok_or_else(|| missing("schema_version"))?;
    id.check(file, &name, &version)?;
    serde_json::from_value(value).map_err(json)
}

/// Serialises `value` as pretty JSON with a trailing newline.
pub(crate) fn to_vec<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("plain data serialises");
    bytes.push(b'\n');
    bytes
}
