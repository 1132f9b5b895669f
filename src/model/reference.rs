//! The plaintext twin: evaluates an [`Adapter`] in `f64`.
//!
//! Every encrypted run has this evaluator as its reference. Besides the output it returns
//! a [`ReferenceReport`] that records, for every `Poly` node, the range of values that
//! reached it and how many fell outside the declared interval: the encrypted evaluation
//! computes garbage for those, so a non-clean report means the adapter (or its intervals)
//! must be fixed before encrypting.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Slice};

use super::adapter::Adapter;
use super::layer::{NodeRef, Op};
use crate::{Error, Result};

/// Range statistics of the values that reached one `Poly` node.
#[derive(Clone, Debug, PartialEq)]
pub struct PolyStats {
    /// Index of the node in [`Adapter::nodes`].
    pub node_index: usize,
    /// Name of the node.
    pub node: String,
    /// Declared interval of the activation.
    pub lo: f64,
    /// Declared interval of the activation.
    pub hi: f64,
    /// How many scalar values were evaluated (samples x width).
    pub evaluated: usize,
    /// How many of them fell outside `[lo, hi]`.
    pub outside: usize,
    /// Smallest value seen.
    pub min: f64,
    /// Largest value seen.
    pub max: f64,
}

impl PolyStats {
    /// The [`Error::OutOfInterval`] describing the worst offending value, or `None` when
    /// every value was inside the interval.
    pub fn to_error(&self) -> Option<Error> {
        if self.outside == 0 {
            return None;
        }
        let value = if self.lo - self.min >= self.max - self.hi {
            self.min
        } else {
            self.max
        };
        Some(Error::OutOfInterval {
            context: format!(
                "poly node '{}' ({} of {} values outside)",
                self.node, self.outside, self.evaluated
            ),
            value,
            lo: self.lo,
            hi: self.hi,
        })
    }
}

/// What the reference evaluation observed besides the output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReferenceReport {
    /// Number of samples evaluated.
    pub samples: usize,
    /// One entry per `Poly` node, in node order.
    pub poly: Vec<PolyStats>,
}

impl ReferenceReport {
    /// True when no value left any declared activation interval.
    pub fn is_clean(&self) -> bool {
        self.poly.iter().all(|p| p.outside == 0)
    }

    /// Total number of out-of-interval values over all `Poly` nodes.
    pub fn total_outside(&self) -> usize {
        self.poly.iter().map(|p| p.outside).sum()
    }

    /// The `Poly` nodes that saw at least one out-of-interval value.
    pub fn violations(&self) -> impl Iterator<Item = &PolyStats> {
        self.poly.iter().filter(|p| p.outside > 0)
    }

    /// `Ok(())` if the report is clean, else the [`Error::OutOfInterval`] of the first
    /// offending node, for callers that want to refuse such inputs.
    ///
    /// # Errors
    /// [`Error::OutOfInterval`] as described.
    pub fn check(&self) -> Result<()> {
        match self.poly.iter().find_map(PolyStats::to_error) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for ReferenceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} samples", self.samples)?;
        for p in &self.poly {
            write!(
                f,
                "; {}: {}/{} outside [{}, {}], seen [{}, {}]",
                p.node, p.outside, p.evaluated, p.lo, p.hi, p.min, p.max
            )?;
        }
        Ok(())
    }
}

/// How `Poly` nodes are evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PolyMode {
    /// The polynomial, as the encrypted run computes it.
    Polynomial,
    /// The named function when there is one (explicit polynomials stay polynomials).
    ExactFn,
}

/// Index of the largest entry of `v` (the first on ties, in IEEE total order); 0 for an
/// empty vector. O(len).
pub fn argmax(v: ArrayView1<f64>) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if v.get(best)
            .is_some_and(|b| x.total_cmp(b) == std::cmp::Ordering::Greater)
        {
            best = i;
        }
    }
    best
}

/// How many rows of `got` have the same [`argmax`] as the matching row of `want` (the
/// "argmax agreement" every encrypted-vs-plaintext comparison reports).
///
/// # Errors
/// [`Error::DimensionMismatch`] if the shapes differ.
pub fn argmax_agreement(got: ArrayView2<f64>, want: ArrayView2<f64>) -> Result<usize> {
    if got.dim() != want.dim() {
        return Err(Error::dims("rows x columns", want.len(), got.len()));
    }
    Ok(got
        .axis_iter(Axis(0))
        .zip(want.axis_iter(Axis(0)))
        .filter(|(a, b)| argmax(*a) == argmax(*b))
        .count())
}

/// Relative RMS error `||got - want||_2 / ||want||_2` over all entries (the figure the
/// quantized and encrypted paths report next to [`argmax_agreement`]).
///
/// # Errors
/// [`Error::DimensionMismatch`] if the shapes differ.
pub fn relative_rms_error(got: ArrayView2<f64>, want: ArrayView2<f64>) -> Result<f64> {
    if got.dim() != want.dim() {
        return Err(Error::dims("rows x columns", want.len(), got.len()));
    }
    let num: f64 = got
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    let den: f64 = want.iter().map(|v| v * v).sum();
    Ok((num / den).sqrt())
}

/// Evaluates `adapter` on one sample; `inputs[i]` is the vector for input `i`.
///
/// Returns the output vector (width [`Adapter::output_dim`]) and the interval report.
///
/// # Errors
/// [`Error::Model`] for a wrong number of inputs, [`Error::DimensionMismatch`] for a wrong
/// width, [`Error::InvalidValue`] for a NaN/infinite input or a non-finite intermediate
/// value (overflow).
pub fn evaluate(
    adapter: &Adapter,
    inputs: &[ArrayView1<f64>],
) -> Result<(Array1<f64>, ReferenceReport)> {
    single(adapter, inputs, PolyMode::Polynomial)
}

/// Like [`evaluate`], but `Poly` nodes that approximate a named function evaluate that
/// function exactly (explicit polynomials are unchanged). Comparing both outputs measures
/// the end-to-end effect of the polynomial approximation.
///
/// # Errors
/// As [`evaluate`].
pub fn evaluate_exact_fn(
    adapter: &Adapter,
    inputs: &[ArrayView1<f64>],
) -> Result<(Array1<f64>, ReferenceReport)> {
    single(adapter, inputs, PolyMode::ExactFn)
}

/// Evaluates `adapter` on a batch: `inputs[i]` is `samples x dim_i`, one row per sample,
/// and every input must have the same number of rows. Returns `samples x output_dim`.
///
/// # Errors
/// As [`evaluate`], plus [`Error::DimensionMismatch`] when the row counts differ and
/// [`Error::InvalidValue`] for an empty batch.
pub fn evaluate_batch(
    adapter: &Adapter,
    inputs: &[ArrayView2<f64>],
) -> Result<(Array2<f64>, ReferenceReport)> {
    run(adapter, inputs, PolyMode::Polynomial)
}

/// Batch version of [`evaluate_exact_fn`] (shapes as in [`evaluate_batch`]).
///
/// # Errors
/// As [`evaluate_batch`].
pub fn evaluate_exact_fn_batch(
    adapter: &Adapter,
    inputs: &[ArrayView2<f64>],
) -> Result<(Array2<f64>, ReferenceReport)> {
    run(adapter, inputs, PolyMode::ExactFn)
}

fn single(
    adapter: &Adapter,
    inputs: &[ArrayView1<f64>],
    mode: PolyMode,
) -> Result<(Array1<f64>, ReferenceReport)> {
    let rows: Vec<ArrayView2<f64>> = inputs
        .iter()
        .map(|v| v.view().insert_axis(Axis(0)))
        .collect();
    let (out, report) = run(adapter, &rows, mode)?;
    Ok((out.row(0).to_owned(), report))
}

fn check_inputs(adapter: &Adapter, inputs: &[ArrayView2<f64>]) -> Result<usize> {
    let specs = adapter.inputs();
    if inputs.len() != specs.len() {
        return Err(Error::model(format!(
            "adapter takes {} input(s) ({}), got {}",
            specs.len(),
            specs
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            inputs.len()
        )));
    }
    let samples = inputs.first().map_or(0, |x| x.nrows());
    if samples == 0 {
        return Err(Error::InvalidValue {
            context: "reference inputs".into(),
            reason: "empty batch".into(),
        });
    }
    for (spec, x) in specs.iter().zip(inputs) {
        if x.ncols() != spec.dim {
            return Err(Error::dims(
                format!("width of input '{}'", spec.name),
                spec.dim,
                x.ncols(),
            ));
        }
        if x.nrows() != samples {
            return Err(Error::dims(
                format!("sample count of input '{}'", spec.name),
                samples,
                x.nrows(),
            ));
        }
        if let Some(((r, c), v)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(Error::InvalidValue {
                context: format!("input '{}', sample {r}, feature {c}", spec.name),
                reason: format!("value is {v}"),
            });
        }
    }
    Ok(samples)
}

fn run(
    adapter: &Adapter,
    inputs: &[ArrayView2<f64>],
    mode: PolyMode,
) -> Result<(Array2<f64>, ReferenceReport)> {
    let samples = check_inputs(adapter, inputs)?;
    let mut report = ReferenceReport {
        samples,
        poly: Vec::new(),
    };
    let mut values: Vec<Array2<f64>> = Vec::with_capacity(adapter.nodes().len());
    for (j, node) in adapter.nodes().iter().enumerate() {
        let operand = |r: NodeRef| -> Result<ArrayView2<f64>> {
            match r {
                NodeRef::Input(i) => inputs.get(i).map(|x| x.view()),
                NodeRef::Node(k) => values.get(k).map(|x| x.view()),
            }
            .ok_or_else(|| Error::model(format!("node '{}': dangling operand {r:?}", node.name)))
        };
        let first = || -> Result<ArrayView2<f64>> {
            let r = node
                .inputs
                .first()
                .copied()
                .ok_or_else(|| Error::model(format!("node '{}' has no operand", node.name)))?;
            operand(r)
        };
        let y: Array2<f64> = match &node.op {
            Op::Linear { weight, bias } => {
                let mut y = first()?.dot(&weight.t());
                if let Some(b) = bias {
                    y += b;
                }
                y
            }
            Op::LowRank { a, b, scale, bias } => {
                let h = first()?.dot(&a.t());
                let mut y = h.dot(&b.t()) * *scale;
                if let Some(bias) = bias {
                    y += bias;
                }
                y
            }
            Op::Affine { mul, add } => {
                let mut y = &first()? * mul;
                y += add;
                y
            }
            Op::Scale(s) => &first()? * *s,
            Op::Poly(act) => {
                let x = first()?;
                let mut stats = PolyStats {
                    node_index: j,
                    node: node.name.clone(),
                    lo: act.lo,
                    hi: act.hi,
                    evaluated: x.len(),
                    outside: 0,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                };
                for &v in x.iter() {
                    stats.min = stats.min.min(v);
                    stats.max = stats.max.max(v);
                    if !act.contains(v) {
                        stats.outside += 1;
                    }
                }
                report.poly.push(stats);
                match (mode, act.func) {
                    (PolyMode::ExactFn, Some(f)) => x.mapv(|v| f.eval(v)),
                    _ => x.mapv(|v| act.eval(v)),
                }
            }
            Op::Add => {
                let mut y = first()?.to_owned();
                for &r in node.inputs.iter().skip(1) {
                    y += &operand(r)?;
                }
                y
            }
            Op::Concat => {
                let mut y = Array2::zeros((samples, node.out_dim));
                let mut col = 0;
                for &r in &node.inputs {
                    let x = operand(r)?;
                    let w = x.ncols();
                    y.slice_axis_mut(Axis(1), Slice::from(col..col + w))
                        .assign(&x);
                    col += w;
                }
                y
            }
        };
        if y.dim() != (samples, node.out_dim) {
            return Err(Error::model(format!(
                "node '{}' produced shape {:?}, expected ({samples}, {})",
                node.name,
                y.dim(),
                node.out_dim
            )));
        }
        if let Some(((r, c), v)) = y.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(Error::InvalidValue {
                context: format!("node '{}', sample {r}, feature {c}", node.name),
                reason: format!("intermediate value is {v} (overflow)"),
            });
        }
        values.push(y);
    }
    let out = values
        .pop()
        .ok_or_else(|| Error::model("adapter has no node"))?;
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(array![0.5, 2.0, -1.0, 2.0].view()), 1);
        assert_eq!(argmax(array![-3.0].view()), 0);
        assert_eq!(argmax(Array1::<f64>::zeros(0).view()), 0);
        assert_eq!(argmax(array![1.0, f64::INFINITY, 3.0].view()), 1);
        let got = array![[0.1, 0.9], [0.8, 0.2], [0.5, 0.4]];
        let want = array![[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]];
        assert_eq!(argmax_agreement(got.view(), want.view()).unwrap(), 2);
        assert!(argmax_agreement(got.view(), want.t()).is_err());
        let rel = relative_rms_error(got.view(), want.view()).unwrap();
        let num: f64 = [0.01, 0.01, 0.64, 0.64, 0.25, 0.16].iter().sum();
        assert!((rel - (num / 3.0f64).sqrt()).abs() < 1e-12, "{rel}");
    }
}
