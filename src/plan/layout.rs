//! Slot layouts of packed vectors in latency mode.

/// A piece of a vector held by one ciphertext: values `offset..offset+dim` of the vector sit
/// in slots `0..dim`, replicated with period `period` (the next power of two) over all slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index of the first value of the vector held here.
    pub offset: usize,
    /// Number of values held.
    pub dim: usize,
    /// Replication period (power of two, `dim <= period <= slots`).
    pub period: usize,
}

/// Splits a vector of width `dim` into segments of at most `slots` values.
pub fn split(dim: usize, slots: usize) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < dim {
        let d = (dim - offset).min(slots);
        out.push(Segment {
            offset,
            dim: d,
            period: d.next_power_of_two(),
        });
        offset += d;
    }
    out
}

/// The slot vector of one segment of `values`.
pub fn pack(values: &[f64], seg: &Segment, slots: usize) -> Vec<f64> {
    (0..slots)
        .map(|s| {
            let i = s % seg.period;
            if i < seg.dim {
                values[seg.offset + i]
            } else {
                0.0
            }
        })
        .collect()
}

/// Re-numbers segments of a concatenation: the offsets of `b` are shifted by `shift`.
pub fn shifted(segs: &[Segment], shift: usize) -> Vec<Segment> {
    segs.iter()
        .map(|s| Segment {
            offset: s.offset + shift,
            ..*s
        })
        .collect()
}
