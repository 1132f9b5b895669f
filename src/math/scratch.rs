//! A small per-thread pool of word buffers.
//!
//! Homomorphic operations create and drop many polynomial-sized buffers (hundreds of KiB each).
//! The system allocator hands such sizes back to the kernel and page-faults them in again on
//! the next use, which cost about a fifth of a key switch when measured. Buffers of dropped
//! polynomials come back here instead and are reused by the next allocation of the same size.
//! Each thread keeps at most [`POOL_MAX_BYTES`].

use std::cell::RefCell;

/// Upper bound on the bytes one thread keeps pooled.
pub const POOL_MAX_BYTES: usize = 64 << 20;
const POOL_MAX_BUFFERS: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Vec<u64>>> = const { RefCell::new(Vec::new()) };
}

fn take(len: usize) -> Option<Vec<u64>> {
    POOL.with(|p| {
        let mut p = p.try_borrow_mut().ok()?;
        let i = p
            .iter()
            .rposition(|v| v.capacity() >= len && v.capacity() <= 2 * len.max(1))?;
        Some(p.swap_remove(i))
    })
}

/// A zeroed buffer of `len` words, reused from the pool when one fits.
pub fn zeroed(len: usize) -> Vec<u64> {
    match take(len) {
        Some(mut v) => {
            v.clear();
            v.resize(len, 0);
            v
        }
        None => vec![0u64; len],
    }
}

/// A buffer of `len` words with unspecified (but initialised) contents, for callers that
/// overwrite every word.
pub fn dirty(len: usize) -> Vec<u64> {
    match take(len) {
        Some(mut v) => {
            v.truncate(len);
            v.resize(len, 0);
            v
        }
        None => vec![0u64; len],
    }
}

/// A copy of `src` in a pooled buffer.
pub fn copied(src: &[u64]) -> Vec<u64> {
    let mut v = dirty(src.len());
    v.copy_from_slice(src);
    v
}

/// Returns a buffer to this thread's pool (or frees it when the pool is full).
pub fn recycle(v: Vec<u64>) {
    if v.capacity() < 1024 {
        return;
    }
    POOL.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            let bytes: usize = p.iter().map(|b| b.capacity() * 8).sum();
            if p.len() < POOL_MAX_BUFFERS && bytes + v.capacity() * 8 <= POOL_MAX_BYTES {
                p.push(v);
            }
        }
    });
}
