//! After tuning, a large block freed and allocated again comes from the heap, not from a fresh
//! mmap: glibc's own statistics show no mapped bytes for it.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use malloc_tuning::{Tuning, keep_freed_memory};

/// Bytes glibc currently holds in mmapped blocks (`mallinfo2().hblkhd`).
fn mmapped_bytes() -> usize {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct of counters.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallinfo2().hblkhd
    }
}

#[test]
fn sixteen_mebibyte_blocks_stay_on_the_heap() {
    // Without tuning glibc's starting threshold is 128 KiB, so this block would be mmapped.
    let block_bytes = 16 << 20;
    assert_eq!(keep_freed_memory(), Tuning::Applied);
    let before = mmapped_bytes();
    for round in 0..4u8 {
        let block = vec![round; block_bytes];
        assert_eq!(block[block_bytes - 1], round);
        assert!(
            mmapped_bytes() < before + block_bytes,
            "round {round}: the block was mmapped ({} bytes mapped, {before} before)",
            mmapped_bytes()
        );
        drop(block);
    }
}
