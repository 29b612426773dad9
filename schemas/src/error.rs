//! One error type for every format in this crate; each variant names the file it is about.

/// What went wrong while writing or reading an imagebert file.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The file carries no schema name or version at all (not written by imagebert).
    #[error(
        "{file}: no `{key}` entry in the file's key-value metadata; not an imagebert {expected} file"
    )]
    MissingMetadata {
        /// The file (path or URL) that was read.
        file: String,
        /// The metadata key that is missing.
        key: String,
        /// The schema name the reader expected.
        expected: String,
    },
    /// The file is some other imagebert format.
    #[error("{file}: schema is `{found}`, expected `{expected}`")]
    WrongSchema {
        /// The file (path or URL) that was read.
        file: String,
        /// The schema name found in the file.
        found: String,
        /// The schema name the reader expected.
        expected: String,
    },
    /// The file is the right format at a version this build does not read.
    #[error("{file}: schema `{schema}` has version {found}, this build reads version {expected}")]
    WrongVersion {
        /// The file (path or URL) that was read.
        file: String,
        /// The schema name.
        schema: String,
        /// The version found in the file.
        found: String,
        /// The version this build reads.
        expected: u32,
    },
    /// A required column is absent.
    #[error("{file}: column `{column}` is missing")]
    MissingColumn {
        /// The file (path or URL) that was read.
        file: String,
        /// The missing column.
        column: String,
    },
    /// A column has another Arrow type or nullability than the schema says.
    #[error("{file}: column `{column}` has type {found}, expected {expected}")]
    WrongColumnType {
        /// The file (path or URL) that was read.
        file: String,
        /// The column whose type is wrong.
        column: String,
        /// The type found, as Arrow prints it.
        found: String,
        /// The type expected, as Arrow prints it.
        expected: String,
    },
    /// A format-specific metadata value is absent or does not parse.
    #[error("{file}: metadata `{key}`: {reason}")]
    BadMetadata {
        /// The file (path or URL) that was read.
        file: String,
        /// The metadata key.
        key: String,
        /// Why the value was refused.
        reason: String,
    },
    /// One row breaks a rule of the schema (an unknown status, lengths that disagree...).
    #[error("{file}: row {row}, column `{column}`: {reason}")]
    InvalidRow {
        /// The file (path or URL) that was read or written.
        file: String,
        /// The row index within the file (0-based).
        row: usize,
        /// The offending column.
        column: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// The Parquet layer failed (corrupt or truncated file, I/O error).
    #[error("{file}: parquet: {source}")]
    Parquet {
        /// The file (path or URL) that was read or written.
        file: String,
        /// The underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The Arrow layer refused a batch.
    #[error("{file}: arrow: {source}")]
    Arrow {
        /// The file (path or URL) that was read or written.
        file: String,
        /// The underlying error.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// A JSON side file does not parse.
    #[error("{file}: json: {source}")]
    Json {
        /// The file (path or URL) that was read.
        file: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

impl SchemaError {
    /// Wraps a Parquet error with the file it came from.
    pub fn parquet(file: &str, source: parquet::errors::ParquetError) -> Self {
        Self::Parquet {
            file: file.to_owned(),
            source,
        }
    }

    /// Wraps an Arrow error with the file it came from.
    pub fn arrow(file: &str, source: arrow::error::ArrowError) -> Self {
        Self::Arrow {
            file: file.to_owned(),
            source,
        }
    }

    /// An invalid value in one row.
    pub fn row(file: &str, row: usize, column: &str, reason: impl Into<String>) -> Self {
        Self::InvalidRow {
            file: file.to_owned(),
            row,
            column: column.to_owned(),
            reason: reason.into(),
        }
    }
}
