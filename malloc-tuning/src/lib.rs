//! Tunes glibc's malloc for processes that allocate and free the same large tensors every step.
//!
//! A CPU training step allocates hundreds of megabytes of activations and gradients and frees
//! them before the next step. With glibc's defaults, large blocks are mmapped and unmapped each
//! time and the top of the heap is trimmed back to the kernel, so every step faults its memory in
//! again (the kernel zeroes each page) and reads it cold. [`keep_freed_memory`] keeps that memory
//! in the process instead:
//!
//! * no block is ever mmapped ([`MMAP_MAX`]): raising the mmap threshold is not enough, since
//!   glibc caps it at 32 MiB and `base`'s vocabulary-sized gradients are 94 MB;
//! * every thread allocates from the main heap ([`ARENA_MAX`]): glibc's per-thread arenas mmap
//!   any block above 64 MiB whatever the other settings say, and the compute pool's threads
//!   allocate most tensors;
//! * the heap is never trimmed ([`TRIM_THRESHOLD`]) and grows in large steps ([`TOP_PAD_BYTES`]).
//!
//! Measured on `trainer bench`'s `base` pre-training step (2-core CPU, 12 s of steady training
//! sampled with `perf stat -e page-faults`): 161,800 page faults and 13 mmap/munmap calls with
//! the previous settings (mmap threshold 32 MiB, trim threshold 2 GiB), 423 and none with these;
//! peak memory 3.52 GB before, 3.33 GB after.
//!
//! The same settings can be given without this crate through the environment:
//! `GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.arena_max=1:glibc.malloc.trim_threshold=18446744073709551615:glibc.malloc.top_pad=268435456`.

/// At most this many blocks are mmapped at a time: none, so every block comes from the heap and
/// is reused after `free`.
pub const MMAP_MAX: i32 = 0;
/// Number of malloc arenas: one, the main heap, shared by every thread.
pub const ARENA_MAX: i32 = 1;
/// Free memory at the top of the heap is handed back to the kernel only above this size; -1 is
/// glibc's documented value for "never".
pub const TRIM_THRESHOLD: i32 = -1;
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
/// other threads start: a thread that allocated earlier keeps an arena of its own. Does nothing
/// when `GLIBC_TUNABLES` already names a `glibc.malloc` option.
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
        (libc::M_ARENA_MAX, ARENA_MAX, "M_ARENA_MAX"),
        (libc::M_MMAP_MAX, MMAP_MAX, "M_MMAP_MAX"),
        (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD, "M_TRIM_THRESHOLD"),
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
