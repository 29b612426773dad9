//! Schema name and version: how every imagebert file says what it is.
//!
//! Parquet files carry them as key-value metadata under [`SCHEMA_NAME_KEY`] and
//! [`SCHEMA_VERSION_KEY`]; JSON side files carry them as the `schema` and `schema_version` fields.

use std::collections::HashMap;

use arrow::datatypes::Schema;

use crate::{Result, SchemaError};

/// Key-value metadata key holding the schema name.
pub const SCHEMA_NAME_KEY: &str = "imagebert.schema";
/// Key-value metadata key holding the schema version (a decimal integer).
pub const SCHEMA_VERSION_KEY: &str = "imagebert.schema_version";

/// The identity of one file format: a name and the version this build writes and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaId {
    /// Stable name, e.g. `pair_shard`.
    pub name: &'static str,
    /// Bumped on every incompatible change of columns or meaning.
    pub version: u32,
}

impl SchemaId {
    /// The two metadata entries that mark a file as this schema.
    pub fn metadata(&self) -> Vec<(String, String)> {
        vec![
            (SCHEMA_NAME_KEY.to_owned(), self.name.to_owned()),
            (SCHEMA_VERSION_KEY.to_owned(), self.version.to_string()),
        ]
    }

    /// Refuses `metadata` unless it names exactly this schema and version.
    pub fn check_metadata(&self, file: &str, metadata: &HashMap<String, String>) -> Result<()> {
        let entry = |key: &str| {
            metadata
                .get(key)
                .ok_or_else(|| SchemaError::MissingMetadata {
                    file: file.to_owned(),
                    key: key.to_owned(),
                    expected: self.name.to_owned(),
                })
        };
        self.check(file, entry(SCHEMA_NAME_KEY)?, entry(SCHEMA_VERSION_KEY)?)
    }

    /// Refuses a `(name, version)` pair that is not this schema at this version.
    pub fn check(&self, file: &str, name: &str, version: &str) -> Result<()> {
        if name != self.name {
            return Err(SchemaError::WrongSchema {
                file: file.to_owned(),
                found: name.to_owned(),
                expected: self.name.to_owned(),
            });
        }
        if version.trim().parse::<u32>().ok() != Some(self.version) {
            return Err(SchemaError::WrongVersion {
                file: file.to_owned(),
                schema: self.name.to_owned(),
                found: version.to_owned(),
                expected: self.version,
            });
        }
        Ok(())
    }
}

/// Refuses `found` unless every column of `expected` is present with the same type, ignoring the
/// names of nested list items (other writers call them `element`), and is not nullable where
/// `expected` forbids nulls. Extra columns are allowed: users may add their own.
pub fn check_columns(file: &str, found: &Schema, expected: &Schema) -> Result<()> {
    for want in expected.fields() {
        let Ok(have) = found.field_with_name(want.name()) else {
            return Err(SchemaError::MissingColumn {
                file: file.to_owned(),
                column: want.name().clone(),
            });
        };
        let nullability_ok = want.is_nullable() || !have.is_nullable();
        if !have.data_type().equals_datatype(want.data_type()) || !nullability_ok {
            let describe = |f: &arrow::datatypes::Field| {
                let null = if f.is_nullable() {
                    "nullable"
                } else {
                    "not null"
                };
                format!("{} ({null})", f.data_type())
            };
            return Err(SchemaError::WrongColumnType {
                file: file.to_owned(),
                column: want.name().clone(),
                found: describe(have),
                expected: describe(want),
            });
        }
    }
    Ok(())
}
