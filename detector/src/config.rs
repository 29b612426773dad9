//! `detector extract` configuration: one TOML file, every key optional with a documented default
//! (`configs/extract.toml` lists them all); unknown keys are refused with their name.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Settings of `detector extract`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractConfig {
    /// Images per `detect` call. Default 32: enough to keep a GPU busy with a light detector at
    /// 512×512; lower it when the device runs out of memory. `--batch-size` overrides it.
    pub batch_size: usize,
    /// Batches decoded and prepared ahead of the device. Default 2: one waiting while the next
    /// is made, so host work hides behind device work without holding many inputs in memory.
    pub prefetch_batches: usize,
    /// Largest image, in pixels from its header, that is decoded; larger ones get a `failed`
    /// row (decompression-bomb guard). Default 50,000,000, the pipeline's own cap (its stored
    /// images are far smaller).
    pub max_decoded_pixels: u64,
    /// Threads that decode and prepare images; 0 means one per CPU core. Default 0.
    pub decode_threads: usize,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            prefetch_batches: 2,
            max_decoded_pixels: 50_000_000,
            decode_threads: 0,
        }
    }
}

impl ExtractConfig {
    /// Reads and checks the TOML file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Parses and checks TOML text; errors name the offending key.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses values that can't work, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("batch_size must be at least 1");
        }
        if self.prefetch_batches == 0 {
            bail!("prefetch_batches must be at least 1");
        }
        if self.max_decoded_pixels == 0 {
            bail!("max_decoded_pixels must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_lists_every_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/extract.toml");
        assert_eq!(
            ExtractConfig::load(&path).unwrap(),
            ExtractConfig::default()
        );
        // Every key is spelled out, so removing one from the struct breaks this test too.
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table.len(), 4, "{table:?}");
    }

    #[test]
    fn partial_files_keep_the_other_defaults() {
        let config = ExtractConfig::parse("batch_size = 8").unwrap();
        assert_eq!(
            config,
            ExtractConfig {
                batch_size: 8,
                ..ExtractConfig::default()
            }
        );
    }

    #[test]
    fn errors_name_the_key() {
        let error = ExtractConfig::parse("batch_sise = 8").unwrap_err();
        assert!(format!("{error:#}").contains("batch_sise"), "{error:#}");
        let error = ExtractConfig::parse("max_decoded_pixels = \"many\"").unwrap_err();
        assert!(
            format!("{error:#}").contains("max_decoded_pixels"),
            "{error:#}"
        );
        let error = ExtractConfig::parse("prefetch_batches = 0").unwrap_err();
        assert!(
            format!("{error:#}").contains("prefetch_batches"),
            "{error:#}"
        );
        let error = ExtractConfig::load(Path::new("/nonexistent/extract.toml")).unwrap_err();
        assert!(
            format!("{error:#}").contains("/nonexistent/extract.toml"),
            "{error:#}"
        );
    }
}
