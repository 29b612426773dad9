//! How the GPU backends compile and tune their kernels: where compiled kernels and autotune
//! results persist between processes, how hard autotuning searches, and where CubeCL logs its
//! compilations, autotune runs and kernel timings.
//!
//! Burn 0.21's CUDA backend compiles every kernel with NVRTC the first time a process launches it
//! and autotunes matmuls and reductions per shape class; measured on an H100, that is most of a
//! cold start (`docs/gpu.md`). CubeCL keeps autotune results in `target/` of the Cargo project
//! it runs in (the user cache folder outside one) and compiled kernels nowhere. [`KernelOptions`]
//! puts both in one folder that can travel with the binary (a container image can ship it warm),
//! and sets CubeCL's global configuration once, before the first kernel. The CPU backend
//! compiles no kernels: the same flags parse there and change nothing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// How hard CubeCL's autotuner searches for the fastest kernel of each shape class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AutotuneEffort {
    /// Fewest candidates: the fastest cold start.
    Minimal,
    /// CubeCL's default.
    Balanced,
    /// More candidates.
    Extensive,
    /// Every candidate.
    Full,
}

/// Flags every GPU-capable binary takes (global: they go before or after the subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct KernelOptions {
    /// Folder for compiled GPU kernels (PTX) and autotune results, kept between processes: a
    /// process that finds a kernel there skips its NVRTC compilation and autotuning. Default:
    /// `kernel-cache` beside the executable when that folder exists or can be made (so a copied
    /// or packaged binary carries its warm cache), else `imagebert/kernels` in the user's cache
    /// folder. `none` turns both caches off. GPU builds only.
    #[arg(
        long,
        env = "IMAGEBERT_KERNEL_CACHE",
        value_name = "DIR",
        global = true
    )]
    pub kernel_cache: Option<PathBuf>,
    /// How hard autotuning searches for each matmul and reduction shape class. GPU builds only.
    #[arg(
        long,
        env = "IMAGEBERT_AUTOTUNE",
        value_enum,
        default_value = "balanced",
        global = true
    )]
    pub autotune: AutotuneEffort,
    /// Append CubeCL's log of kernel compilations (with their source) and autotune results to
    /// this file; with --kernel-profile also every kernel's run time. GPU builds only.
    #[arg(long, value_name = "FILE", global = true)]
    pub kernel_log: Option<PathBuf>,
    /// With --kernel-log: time every kernel launch and log a summary (slows the run: each
    /// launch is timed on the device). GPU builds only.
    #[arg(long, requires = "kernel_log", global = true)]
    pub kernel_profile: bool,
}

impl KernelOptions {
    /// The flags that give a child process of the same binary these options.
    pub fn as_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        if let Some(folder) = &self.kernel_cache {
            args.extend(["--kernel-cache".into(), folder.into()]);
        }
        let effort = clap::ValueEnum::to_possible_value(&self.autotune)
            .expect("every effort has a name")
            .get_name()
            .to_owned();
        args.extend(["--autotune".into(), effort.into()]);
        if let Some(log) = &self.kernel_log {
            args.extend(["--kernel-log".into(), log.into()]);
        }
        if self.kernel_profile {
            args.push("--kernel-profile".into());
        }
        args
    }

    /// The cache folder these options choose, `None` when caching is off: `--kernel-cache` as
    /// given (`none` for off), else `kernel-cache` beside `executable` when it exists or can be
    /// made, else `imagebert/kernels` under `user_cache`.
    pub fn cache_folder(
        &self,
        executable: Option<&Path>,
        user_cache: Option<&Path>,
    ) -> Option<PathBuf> {
        match &self.kernel_cache {
            Some(folder) if folder.as_os_str() == "none" => None,
            Some(folder) => Some(folder.clone()),
            None => executable
                .and_then(Path::parent)
                .map(|dir| dir.join("kernel-cache"))
                .filter(|folder| folder.is_dir() || std::fs::create_dir_all(folder).is_ok())
                .or_else(|| user_cache.map(|dir| dir.join("imagebert").join("kernels"))),
        }
    }

    /// Sets CubeCL's configuration from these options; call once, before the first tensor is
    /// made. Returns the cache folder in use (see [`KernelOptions::cache_folder`]). With the CPU
    /// backend it changes nothing and returns `None`.
    pub fn apply(&self) -> Option<PathBuf> {
        #[cfg(feature = "cube")]
        {
            let executable = std::env::current_exe().ok();
            let user_cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")));
            let folder = self.cache_folder(executable.as_deref(), user_cache.as_deref());
            set_cubecl_config(self, folder.as_deref());
            tracing::info!(cache = ?folder, autotune = ?self.autotune, "GPU kernel options");
            folder
        }
        #[cfg(not(feature = "cube"))]
        {
            tracing::debug!("the CPU backend compiles no kernels: kernel options ignored");
            None
        }
    }
}

/// CubeCL's configuration: its own (a `cubecl.toml` above the working folder, `CUBECL_*`
/// variables) with `options` on top.
#[cfg(feature = "cube")]
fn set_cubecl_config(options: &KernelOptions, cache: Option<&Path>) {
    use cubecl_runtime::config::autotune::{AutotuneLevel, AutotuneLogLevel};
    use cubecl_runtime::config::cache::CacheConfig;
    use cubecl_runtime::config::compilation::CompilationLogLevel;
    use cubecl_runtime::config::profiling::ProfilingLogLevel;
    use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};

    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    if let Some(folder) = cache {
        config.compilation.cache = Some(CacheConfig::File(folder.to_owned()));
        config.autotune.cache = CacheConfig::File(folder.to_owned());
    }
    config.autotune.level = match options.autotune {
        AutotuneEffort::Minimal => AutotuneLevel::Minimal,
        AutotuneEffort::Balanced => AutotuneLevel::Balanced,
        AutotuneEffort::Extensive => AutotuneLevel::Extensive,
        AutotuneEffort::Full => AutotuneLevel::Full,
    };
    if let Some(file) = &options.kernel_log {
        config.compilation.logger.file = Some(file.clone());
        config.compilation.logger.level = CompilationLogLevel::Basic;
        config.autotune.logger.file = Some(file.clone());
        config.autotune.logger.level = AutotuneLogLevel::Full;
        if options.kernel_profile {
            config.profiling.logger.file = Some(file.clone());
            config.profiling.logger.level = ProfilingLogLevel::Medium;
        }
    }
    CubeClRuntimeConfig::set(config);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kernels: KernelOptions,
    }

    fn parse(args: &[&str]) -> Result<KernelOptions, clap::Error> {
        Cli::try_parse_from(std::iter::once("bin").chain(args.iter().copied()))
            .map(|cli| cli.kernels)
    }

    #[test]
    fn the_cache_defaults_beside_the_executable_and_falls_back_to_the_user_cache() {
        let dir = std::env::temp_dir().join(format!("kernel-options-{}", std::process::id()));
        let executable = dir.join("bin").join("trainer");
        std::fs::create_dir_all(executable.parent().unwrap()).unwrap();
        let user = dir.join("user");
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.autotune, AutotuneEffort::Balanced);
        assert_eq!(
            defaults.cache_folder(Some(&executable), Some(&user)),
            Some(dir.join("bin").join("kernel-cache"))
        );
        assert!(dir.join("bin").join("kernel-cache").is_dir());
        // An executable in a folder that cannot hold the cache: the user's cache folder.
        let blocked = dir.join("file-not-folder");
        std::fs::write(&blocked, b"").unwrap();
        assert_eq!(
            defaults.cache_folder(Some(&blocked.join("trainer")), Some(&user)),
            Some(user.join("imagebert").join("kernels"))
        );
        let given = parse(&["--kernel-cache", "/x/cache", "--autotune", "minimal"]).unwrap();
        assert_eq!(
            given.cache_folder(Some(&executable), None),
            Some("/x/cache".into())
        );
        assert_eq!(given.autotune, AutotuneEffort::Minimal);
        let off = parse(&["--kernel-cache", "none"]).unwrap();
        assert_eq!(off.cache_folder(Some(&executable), Some(&user)), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_child_given_as_args_parses_the_same_options() {
        for given in [
            &[][..],
            &["--kernel-cache", "/x/cache", "--autotune", "full"],
            &[
                "--kernel-log",
                "/x/k.log",
                "--kernel-profile",
                "--autotune",
                "minimal",
            ],
        ] {
            let options = parse(given).unwrap();
            let args = options.as_args();
            let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
            let child = parse(&args).unwrap();
            assert_eq!(format!("{child:?}"), format!("{options:?}"), "{given:?}");
        }
    }

    #[test]
    fn profiling_needs_a_log_and_unknown_efforts_are_refused() {
        assert!(parse(&["--kernel-profile"]).is_err());
        let options = parse(&["--kernel-log", "k.log", "--kernel-profile"]).unwrap();
        assert!(options.kernel_profile);
        let error = parse(&["--autotune", "max"]).expect_err("refused");
        assert!(error.to_string().contains("--autotune"), "{error}");
        // The CPU backend changes nothing.
        if cfg!(not(feature = "cube")) {
            assert_eq!(options.apply(), None);
        }
    }
}
