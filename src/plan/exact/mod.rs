//! Quantize an [`Adapter`](crate::model::Adapter) into an integer plan for the exact (TFHE) backend, and the
//! integer reference twin every encrypted run must match bit for bit.
//!
//! Supported graphs: one input, then a chain of affine blocks (any mix of `Linear`,
//! `LowRank`, `Scale`, `Affine` and `Add` of affine maps of the *same* value, folded into
//! one dense matrix) separated by elementwise `Poly` activations, ending with an affine
//! block. Anything else (concatenation, residuals around an activation, several inputs)
//! returns [`Error::Model`](crate::Error::Model).
//!
//! Integer semantics (what [`QuantizedPlan::reference`] computes and the encrypted run
//! reproduces exactly):
//! - inputs: `x_q = clamp(round(x / s_x), -(2^(b-1) - 1), 2^(b-1) - 1)`, per tensor;
//! - hidden layer (with activation, `J` stages): `acc = (W_q x + b_q) mod 2^p` with
//!   `p = 4J + 5`; `v = acc >> 4J` (in `[0, 32)`). With 5-bit tables (default) `h = T[v]`,
//!   `b_q` carries the offset `16 · 16^J` and `v - 16 = floor(pre-activation / 16^J)`;
//!   with 4-bit tables `h = T[v]` for `v < 16` and `-T[v - 16]` otherwise (the negacyclic
//!   wrap, reached only on overflow), offset `8 · 16^J`. `T` holds `round(f(z) / s_h)` at
//!   the centre `z` of each box (per output channel, since weight scales are per channel),
//!   with `s_h` spreading `[min(f, 0), max(f, 0)]` over `2^hidden_bits - 1` steps;
//!   pre-activations outside the calibrated window wrap modulo `2^p`;
//! - output layer: `y = (W_q h + b_q) mod 2^p_out`, signed; real value `y · s_in · s_w[j]`.
//!
//! Scales are calibrated on sample features: per output channel, the weight scale is the
//! larger of `max|W_j| / (2^(bits-1) - 1)` and the one that maps the largest calibrated
//! pre-activation to `fill · 8 · 16^J`.
//!
//! Layout: `chain` folds the adapter graph into dense layers, `calibrate` chooses scales
//! and widths against the noise model ([`quantize`]), `reference` is the integer twin,
//! `argmax` the encrypted argmax's integer semantics and costs, `public` the public
//! quantization file ([`QuantPublic`]).

mod argmax;
mod budget;
mod calibrate;
mod chain;
mod public;
mod reference;
mod select;

pub use argmax::{
    argmax_one_hot, argmax_pbs, argmax_reductions, ARGMAX_LOG_MODULUS, ARGMAX_MAX_CLASSES,
};
pub use budget::{error_budget, BudgetStep, BUDGET_STEPS};
pub use calibrate::quantize;
pub use public::{QuantPublic, QUANT_FORMAT};
pub use select::{candidates, estimated_cost, rotation_cost, select, Candidate, KEYSWITCH_COST};

/// Boxes one bootstrapping distinguishes on the padded half torus.
const BOXES: usize = 16;

/// Options of [`quantize`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantizeOptions {
    /// Bits of the quantized input features (signed, symmetric).
    pub input_bits: u32,
    /// Largest weight width of hidden layers (signed, per output channel).
    pub weight_bits: u32,
    /// Low-nibble removal stages per hidden neuron (`J`): accumulators hold `4J + 5` bits
    /// and each stage costs two bootstrappings.
    pub stages: u32,
    /// Bits of hidden activations (unsigned if the table is never negative).
    pub hidden_bits: u32,
    /// Bits of the pre-activation the table reads: 4 (16 boxes, one bootstrapping), 5
    /// (32 boxes, three bootstrappings, see [`Evaluator::lut5`](crate::exact::Evaluator::lut5))
    /// or 6 (64 boxes, seven: the top bit of the last removed nibble, one more coarse
    /// bootstrapping, and two 5-bit reads, see [`Evaluator::lut6`](crate::exact::Evaluator::lut6)).
    pub activation_bits: u32,
    /// Largest weight width of the output layer; lowered until decryption is reliable.
    pub output_weight_bits: u32,
    /// Fraction of the representable pre-activation range the calibrated maximum fills.
    pub range_fill: f64,
    /// Encrypted argmax: the server returns an encrypted one-hot vector of the predicted
    /// class (see [`argmax_one_hot`]) instead of the logits. At most [`ARGMAX_MAX_CLASSES`]
    /// classes.
    #[serde(default)]
    pub argmax: bool,
}

impl QuantizeOptions {
    /// The most accurate variant measured (docs/exact.md): 6-bit table reads, three
    /// low-nibble removal stages, 6-bit inputs and hidden outputs (0.958 argmax agreement on
    /// the 384 -> 64 -> ReLU -> 10 benchmark head with the `2^12 x 3` fine bootstrapping key,
    /// against 0.889 for the default), at 3J + 6 blind rotations per hidden unit (four on
    /// the fine key) instead of 3J + 2 (two fine).
    pub fn six_bit() -> Self {
        Self {
            activation_bits: 6,
            stages: 3,
            input_bits: 6,
            hidden_bits: 6,
            ..Self::default()
        }
    }
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        Self {
            input_bits: 5,
            weight_bits: 8,
            stages: 2,
            hidden_bits: 5,
            activation_bits: 5,
            output_weight_bits: 8,
            range_fill: 0.7,
            argmax: false,
        }
    }
}

/// The lookup tables of a hidden layer.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedActivation {
    /// Name of the function (`"relu"`, `"gelu"`, `"poly"`).
    pub name: String,
    /// Low-nibble removal stages `J`.
    pub stages: u32,
    /// Bits the table reads (4: 16 entries, negacyclic wrap; 5: 32 entries; 6: 64 entries,
    /// the last one as [`lut6_value`](crate::exact::lut6_value) gives it).
    pub bits: u32,
    /// One table per output channel (`2^bits` entries).
    pub tables: Vec<Vec<i64>>,
    /// Real value of one unit of each output channel (today one scale shared by the layer).
    /// The next layer's weights have these scales folded in, and its `input_scale` is 1.
    pub output_scales: Vec<f64>,
}

impl QuantizedActivation {
    /// Low bits of the accumulator below the table's read: `4J` for 4- and 5-bit tables,
    /// `4J - 1` for 6-bit tables (whose extra bit is the top bit of the last nibble
    /// removed). The table reads `acc >> read_shift()`.
    pub fn read_shift(&self) -> u32 {
        read_shift(self.stages, self.bits)
    }
}

/// See [`QuantizedActivation::read_shift`].
pub(crate) fn read_shift(stages: u32, bits: u32) -> u32 {
    (4 * stages + 5).saturating_sub(bits.max(5))
}

/// One quantized layer.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedLayer {
    /// Tensors the layer reads, concatenated in this order (0: the inputs; `k`: the output
    /// of hidden layer `k - 1`): several for residuals and concatenations.
    pub sources: Vec<usize>,
    /// Input width.
    pub in_dim: usize,
    /// Output width.
    pub out_dim: usize,
    /// Integer weights, row-major `out_dim x in_dim`.
    pub weights: Vec<i64>,
    /// Integer biases (offsets included).
    pub bias: Vec<i64>,
    /// Accumulator modulus `p` (values are held mod `2^p`).
    pub log_modulus: u32,
    /// Real value of one input unit.
    pub input_scale: f64,
    /// Per-output-channel weight scales.
    pub weight_scales: Vec<f64>,
    /// Activation tables, `None` for the output layer.
    pub activation: Option<QuantizedActivation>,
}

/// What calibration and the noise model found.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantReport {
    /// Calibration samples used.
    pub samples: usize,
    /// Per hidden layer: calibration (sample, neuron) pairs whose pre-activation left the
    /// 16-box range (they wrap, see the module docs).
    pub overflows: Vec<usize>,
    /// Output weight width chosen.
    pub output_weight_bits: u32,
    /// Largest per-bootstrapping failure probability (log2) of the plan; `None` when the plan
    /// has no bootstrapping at all (a linear probe).
    pub max_log2_p_fail_pbs: Option<f64>,
    /// Decryption failure probability of the worst output (log2).
    pub log2_p_fail_decrypt: f64,
    /// Union bound of all failures for one sample (log2).
    pub log2_p_fail_sample: f64,
}

/// An integer plan: quantized layers plus the input quantizer.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedPlan {
    /// Input width (all the adapter's inputs, concatenated in declaration order).
    pub input_dim: usize,
    /// Modulus (log2) each tensor is held at (0: the encrypted inputs; `k`: the outputs of
    /// hidden layer `k - 1`): the largest modulus of the layers reading it.
    pub tensor_log_moduli: Vec<u32>,
    /// Real value of one input unit.
    pub input_scale: f64,
    /// Input width in bits.
    pub input_bits: u32,
    /// The layers, input to output.
    pub layers: Vec<QuantizedLayer>,
    /// Outputs are the one-hot argmax of the logits (see [`argmax_one_hot`]).
    pub argmax: bool,
    /// Calibration and noise report.
    pub report: QuantReport,
}
