//! Tunes glibc's malloc for processes that allocate and free the same large tensors every step.
//!
//! A CPU training step allocates hundreds of megabytes of activations and gradients and frees
//! them before the next step. With glibc's defaults, blocks above a dynamic threshold are mmapped
//! and unmapped each time, and the top of the heap is trimmed back to the kernel, so every step
//! faults its memory in again and reads it cold. [`keep_freed_memory`] keeps that memory in the
//! process instead. Measured on the `mini` pre-training step (2-core CPU, `trainer bench`, see
//! `docs/gpu.md`): 2% to 28% more samples per second over three alternating runs on a noisy
//! machine, with the same peak memory.
//!
//! The same settings can be given without this crate through the environment:
//! `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483647:glibc.malloc.top_pad=268435456`.

/// Blocks below this size come from the heap and are reused after `free`; 32 MiB is the largest
/// threshold glibc accepts.
pub const MMAP_THRESHOLD_BYTES: i32 = 32 << 20;
/// Free memory at the top of the heap is handed back to the kernel only above this size.
pub const TRIM_THRESHOLD_BYTES: i32 = i32::MAX;
/// Extra memory requested each time the heap grows, so growth happens in few large steps.
pub const TOP_PAD_BYTES: i32 = 256 << 20;

/// What [`keep_freed_memory`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// glibc accepted the settings.
    Applied,
    /// `GLIBC_TUNABLES` already sets malloc options: the user's choice is left alone.
    LeftToEnvironment,
    /// Not glibc (e.g. musl or another OS): nothing to tune.
    Unsupported,
}

/// Keeps freed memory in the process (see the crate docs). Call it first thing in `main`, before
/// other threads start. Does nothing when `GLIBC_TUNABLES` already names a `glibc.malloc` option.
///
/// # Panics
/// When glibc refuses one of the settings (it accepts them on every glibc since 2.0).
pub fn keep_freed_memory() -> Tuning {
    let user_set =
        std::env::var("GLIBC_TUNABLES").is_ok_and(|value| value.contains("glibc.malloc"));
    if user_set {
        return Tuning::LeftToEnvironment;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> Tuning {
    for (option, value, name) in [
        (
            libc::M_MMAP_THRESHOLD,
            MMAP_THRESHOLD_BYTES,
            "M_MMAP_THRESHOLD",
        ),
        (
            libc::M_TRIM_THRESHOLD,
            TRIM_THRESHOLD_BYTES,
            "M_TRIM_THRESHOLD",
        ),
        (libc::M_TOP_PAD, TOP_PAD_BYTES, "M_TOP_PAD"),
    ] {
        // SAFETY: mallopt only stores the value in malloc's parameters (under malloc's own lock);
        // it takes no pointers, and every value here is in the range glibc documents.
        #[allow(unsafe_code)]
        let accepted = unsafe { libc::mallopt(option, value) };
        assert_eq!(accepted, 1, "glibc refused mallopt({name}, {value})");
    }
    Tuning::Applied
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> Tuning {
    Tuning::Unsupported
}
