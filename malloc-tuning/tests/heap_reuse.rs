//! After tuning, large blocks freed and allocated again by a worker thread come back from the
//! heap: glibc maps none of them, and allocating one again faults (almost) no fresh pages in.
//!
//! Runs without the test harness (`harness = false` in Cargo.toml): the tuning must come before
//! any other thread starts, and the harness starts its own threads first.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use malloc_tuning::{Tuning, keep_freed_memory};

/// Larger than both limits the old tuning left in place: glibc's 32 MiB cap on the mmap
/// threshold and the 64 MiB heaps of per-thread arenas (as `base`'s 94 MB gradients are).
const BLOCK_BYTES: usize = 96 << 20;

/// Bytes glibc currently holds in mmapped blocks (`mallinfo2().hblkhd`).
fn mmapped_bytes() -> usize {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct of counters.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallinfo2().hblkhd
    }
}

/// Minor page faults of this thread so far (`getrusage(RUSAGE_THREAD)`).
fn minor_faults() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage struct into the pointer it is given, which points to
    // zeroed memory of that type.
    #[allow(unsafe_code)]
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    usage.ru_minflt
}

fn main() {
    assert_eq!(keep_freed_memory(), Tuning::Applied);
    // A worker thread, as the compute pool's threads are.
    let faults_per_round = std::thread::spawn(|| {
        (1..=4u8)
            .map(|round| {
                let before = minor_faults();
                let block = vec![round; BLOCK_BYTES];
                assert_eq!(block[BLOCK_BYTES - 1], round);
                assert_eq!(mmapped_bytes(), 0, "round {round}: the block was mmapped");
                drop(block);
                minor_faults() - before
            })
            .collect::<Vec<_>>()
    })
    .join()
    .expect("the worker thread");
    let pages = (BLOCK_BYTES / 4096) as i64;
    // The first round faults the block in; later rounds reuse those pages.
    assert!(faults_per_round[0] >= pages / 2, "{faults_per_round:?}");
    for (round, faults) in faults_per_round.iter().enumerate().skip(1) {
        assert!(
            *faults < pages / 100,
            "round {}: {faults} page faults for a {pages}-page block ({faults_per_round:?})",
            round + 1
        );
    }
    println!("heap_reuse: ok, page faults per round {faults_per_round:?}");
}
