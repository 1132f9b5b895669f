//! A small pool of word buffers shared by all threads.
//!
//! Homomorphic operations create and drop many polynomial-sized buffers (hundreds of KiB each).
//! The system allocator hands such sizes back to the kernel and page-faults them in again on
//! the next use, which cost about a fifth of a key switch when measured. Buffers of dropped
//! polynomials come back here instead and are reused by the next allocation of the same size.
//!
//! The pool is process-wide, not per thread: rayon workers allocate most buffers (the digits
//! of a key switch, the halves of a `join`) and the calling thread drops them, so per-thread
//! pools filled on one side and stayed empty on the other (measured: a fifth of a rotation
//! at N = 2^14 went to page faults). One uncontended lock per buffer of at least 8 KiB costs
//! nothing measurable. The pool keeps at most [`POOL_MAX_BYTES`].

use std::sync::Mutex;

/// Upper bound on the bytes the pool keeps.
pub const POOL_MAX_BYTES: usize = 128 << 20;
const POOL_MAX_BUFFERS: usize = 128;

struct Pool {
    buffers: Vec<Vec<u64>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    buffers: Vec::new(),
    bytes: 0,
});

fn take(len: usize) -> Option<Vec<u64>> {
    // a poisoned lock only means another thread panicked while pushing or popping a
    // buffer: the list itself is still a valid list of buffers
    let mut p = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let i = p
        .buffers
        .iter()
        .rposition(|v| v.capacity() >= len && v.capacity() <= 2 * len.max(1))?;
    let v = p.buffers.swap_remove(i);
    p.bytes -= v.capacity() * 8;
    Some(v)
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

/// Returns a buffer to the pool (or frees it when the pool is full).
pub fn recycle(v: Vec<u64>) {
    if v.capacity() < 1024 {
        return;
    }
    let mut p = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let bytes = v.capacity() * 8;
    if p.buffers.len() < POOL_MAX_BUFFERS && p.bytes + bytes <= POOL_MAX_BYTES {
        p.bytes += bytes;
        p.buffers.push(v);
    }
}
