//! When to spread work over rayon's pool.
//!
//! Handing a job to the pool from outside it costs a thread wake-up (tens of microseconds), so
//! small polynomial operations stay on the calling thread, and nothing is handed off when the
//! pool has a single worker.

/// Below this many 64-bit words of work, stay on the calling thread.
pub const PAR_MIN_WORDS: usize = 1 << 16;

/// Whether an operation touching `words` words should run on the pool.
#[inline]
pub fn worth_parallel(words: usize) -> bool {
    words >= PAR_MIN_WORDS && rayon::current_num_threads() > 1
}

/// `(a(), b())`, on two threads when `words` is large enough.
pub fn join<A: Send, B: Send>(
    words: usize,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if worth_parallel(words) {
        rayon::join(a, b)
    } else {
        (a(), b())
    }
}
