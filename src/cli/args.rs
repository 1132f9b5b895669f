//! Argument types only (clap derive). Every command is documented in `docs/cli.md`.
//!
//! Size: the CLI's whole argument surface, one clap struct per command and nothing else (documented in `docs/cli.md`).

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use hepeft::ckks::{CkksParams, Security, PRESETS};
use hepeft::plan::Mode;

/// Private inference of PEFT adapters under RNS-CKKS homomorphic encryption.
///
/// Client: keygen -> encrypt -> (send query.ct, eval.keys) -> decrypt.
/// Server: publish (once) -> evaluate.
/// Try `hepeft demo` for the whole pipeline on an embedded example.
#[derive(Debug, Parser)]
#[command(
    name = "hepeft",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Worker threads (rayon's global pool); default: all cores.
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<NonZeroUsize>,

    /// Print a machine-readable JSON report on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, show or select CKKS parameter sets.
    #[command(subcommand)]
    Params(ParamsCmd),
    /// Client: generate the secret, public and evaluation keys for a model.
    Keygen(KeygenArgs),
    /// Client: encrypt features (.npy) into a query for the server.
    Encrypt(EncryptArgs),
    /// Server: evaluate the adapter on an encrypted query (never sees the secret key).
    Evaluate(EvaluateArgs),
    /// Client: decrypt the server's result into logits (.npy) and print the top classes.
    Decrypt(DecryptArgs),
    /// Describe any hepeft file (keys, ciphertexts, parameters, cards, features).
    Inspect(InspectArgs),
    /// Server: write the public model card (structure only, every weight zero) for clients.
    Publish(PublishArgs),
    /// Write a model card from a Hugging Face PEFT checkpoint and the base model's weights.
    ImportPeft(ImportPeftArgs),
    /// Run the whole client -> server -> client pipeline on an embedded example.
    Demo(DemoArgs),
    /// Server: serve the adapter over HTTP (model description, key registration, evaluation).
    Serve(ServeArgs),
    /// Client: query a `hepeft serve` instance (encrypt, send, decrypt) with the keys of DIR.
    Query(QueryArgs),
    /// Tune an adapter privately on labelled features with encrypted forward passes only
    /// (both parties in one process, or the client of `serve --tune` with `--server`; see
    /// docs/tuning.md).
    Tune(TuneArgs),
}

/// `hepeft tune`.
#[derive(Debug, Args)]
pub struct TuneArgs {
    /// The server's model card (the starting weights); both parties run here.
    #[arg(long, value_name = "CARD", required_unless_present = "server")]
    pub model: Option<PathBuf>,
    /// Run only the client's side against `hepeft serve --mode batch --tune` at this URL
    /// (the owner's settings apply; the tuned weights stay with the owner).
    #[arg(long, value_name = "URL", conflicts_with_all = ["model", "out"])]
    pub server: Option<String>,
    /// With --server: key directory (secret.key, public.key, eval.keys) for the served
    /// batch plan; generated there when it holds no keys.
    #[arg(long, value_name = "DIR", requires = "server")]
    pub keys: Option<PathBuf>,
    /// With --server: file holding the access token (else HEPEFT_TOKEN).
    #[arg(long, value_name = "FILE", requires = "server")]
    pub token_file: Option<PathBuf>,
    /// The client's features (.npy, samples x features; one input adapters).
    #[arg(long, value_name = "NPY")]
    pub features: PathBuf,
    /// The client's labels (.npy, one class index per sample).
    #[arg(long, value_name = "NPY")]
    pub labels: PathBuf,
    /// Fraction of the samples (from the end) the client keeps for validation.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    pub validation_split: f64,
    /// Steps in total (a resumed run continues up to this count).
    #[arg(long, default_value_t = 20)]
    pub steps: u64,
    /// Random directions per step (2k encrypted forward passes each).
    #[arg(long, default_value_t = 4, value_name = "K")]
    pub directions: usize,
    /// Perturbation size eps.
    #[arg(long, default_value_t = 1e-2, value_name = "EPS")]
    pub perturbation: f64,
    /// Learning rate.
    #[arg(long, default_value_t = 1.0, value_name = "LR")]
    pub learning_rate: f64,
    /// Which parameters move: all, lora, lora_b or bias.
    #[arg(long, default_value = "all")]
    pub trainable: String,
    /// Per-sample clipping bound of the client's finite differences.
    #[arg(long, default_value_t = 10.0)]
    pub clip: f64,
    /// Gaussian noise on the replies, in units of their sensitivity (differential privacy).
    #[arg(long, value_name = "SIGMA")]
    pub noise_multiplier: Option<f64>,
    /// delta of the reported (epsilon, delta)-DP.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// Precision asked of the parameter selection (bits).
    #[arg(long, default_value_t = 16)]
    pub precision: u32,
    /// Turn noise flooding of the results OFF (weakens adapter privacy; see
    /// docs/threat-model.md).
    #[arg(long)]
    pub no_flooding: bool,
    /// Directory for both parties' checkpoints; a run finding them resumes.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Where the server writes the tuned card (and its weights beside it).
    #[arg(long, value_name = "CARD", required_unless_present = "server")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Model card with the real weights.
    #[arg(long, value_name = "CARD")]
    pub model: PathBuf,
    /// Weights file to use instead of the one the card names.
    #[arg(long, value_name = "SAFETENSORS")]
    pub weights: Option<PathBuf>,
    /// Calibration features of a one-input adapter (.npy, samples x width): the adapter's
    /// public error bound, which sizes the flooding, is measured on them instead of on
    /// inputs uniform in [-1, 1] (give the same file as to `params select --calib`).
    #[arg(long = "calib", value_name = "NPY")]
    pub calib: Option<PathBuf>,
    /// Parameter set: a preset name or a TOML file.
    #[arg(long, value_parser = parse_params_source, value_name = "NAME|FILE")]
    pub params: ParamsSource,
    /// Packing layout the service offers (default: the one the parameter file records,
    /// else latency).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Client pre-rotated input layout the service offers: queries carry up to K rotated
    /// copies of each input segment (a power of two; 1 = replicated). Default: the plan
    /// compiler's choice (the cheapest of 1, 2, 4 and 8 copies by its cost model). Served
    /// in the model description, which clients compile their plan from.
    #[arg(long, value_name = "K")]
    pub pre_rotate: Option<usize>,
    /// Batch mode only: input features packed per query ciphertext (a power of two up to
    /// 16; 1 = one ciphertext per feature). A query then takes at most N/(2G) samples and
    /// is about G times smaller; the server unpacks it with G - 1 rotations per ciphertext.
    #[arg(long, value_name = "G", default_value_t = 1)]
    pub batch_pack: usize,
    /// Address to listen on (loopback by default; put TLS termination in front for remote use).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Directory where registered evaluation keys persist across restarts.
    #[arg(long, value_name = "DIR")]
    pub key_store: Option<PathBuf>,
    /// Largest request body, MiB (must cover an evaluation-key upload).
    #[arg(long, default_value_t = 512, value_name = "MIB")]
    pub max_body_mib: usize,
    /// Evaluations running at once (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<NonZeroUsize>,
    /// Requests waiting for a slot before new ones get 503.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub queue: usize,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub timeout_secs: u64,
    /// Disk budget of --key-store, MiB: least recently used key files are deleted above it
    /// (default 4096).
    #[arg(long, value_name = "MIB", requires = "key_store")]
    pub key_store_max_disk_mib: Option<u64>,
    /// Memory budget of the key store, MiB: least recently used key sets leave memory
    /// above it.
    #[arg(long, default_value_t = 4096, value_name = "MIB")]
    pub key_store_max_mib: usize,
    /// Seconds a client has to send a request's headers.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub header_timeout_secs: u64,
    /// Seconds after which a connection with no request in flight and no traffic is closed.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub idle_timeout_secs: u64,
    /// Seconds a client has to send a whole request body (408 past it).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub body_timeout_secs: u64,
    /// Connections open at once; further ones are closed at once.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_connections: usize,
    /// Seconds given to requests in flight after SIGTERM / SIGINT before exiting.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub shutdown_grace_secs: u64,
    /// File of access tokens, one per line: every /v1 request must carry
    /// `Authorization: Bearer <token>` (401 otherwise). Required to listen on a
    /// non-loopback address unless --insecure-no-auth is given.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Listen on a non-loopback address without access tokens.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Sustained requests per second allowed per client (its token, or its IP address).
    #[arg(long, value_name = "PER_SEC")]
    pub rate_limit: Option<f64>,
    /// Burst size of the per-client rate limit.
    #[arg(long, default_value_t = 20, value_name = "N", requires = "rate_limit")]
    pub rate_burst: u32,
    #[command(flatten)]
    pub flooding: FloodingArgs,
    #[command(flatten)]
    pub tune: ServeTuneArgs,
}

/// Private tuning offered by `serve` (`/v1/tune/...`; docs/tuning.md).
#[derive(Args, Debug, Clone)]
pub struct ServeTuneArgs {
    /// Offer private tuning to clients with labelled data (needs `--mode batch`).
    #[arg(long)]
    pub tune: bool,
    /// Directory for the per-run checkpoints (the tuned weights and the direction seed,
    /// mode 0600); runs resume from it. Without it runs live in memory only.
    #[arg(long, value_name = "DIR", requires = "tune")]
    pub tune_dir: Option<PathBuf>,
    /// Random directions per step (2k encrypted passes each).
    #[arg(long, default_value_t = 4, value_name = "K", requires = "tune")]
    pub tune_directions: usize,
    /// Perturbation size eps.
    #[arg(long, default_value_t = 1e-2, value_name = "EPS", requires = "tune")]
    pub tune_perturbation: f64,
    /// Learning rate.
    #[arg(long, default_value_t = 1.0, value_name = "LR", requires = "tune")]
    pub tune_learning_rate: f64,
    /// Which parameters move: all, lora, lora_b or bias.
    #[arg(long, default_value = "all", requires = "tune")]
    pub tune_trainable: String,
    /// Most steps one run may take.
    #[arg(long, default_value_t = 1000, requires = "tune")]
    pub tune_max_steps: u64,
}

/// Output sanitization: noise flooding settings (masking, level drop and re-randomization
/// always run).
#[derive(Debug, Args, Clone, Copy, PartialEq, Default)]
pub struct FloodingArgs {
    /// Statistical security of the noise flooding added to every result, bits (default:
    /// the level the parameter file records, else 40).
    #[arg(long, value_name = "BITS")]
    pub flooding_bits: Option<u32>,
    /// Result decryptions per key the flooding covers at full strength (the bound degrades
    /// as sqrt(queries / this) beyond; default: the recorded budget, else 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub flooding_queries: Option<u64>,
    /// Turn noise flooding off: the client's decryption error then depends on the weights
    /// and leaks information about them. For tests and trusted clients only.
    #[arg(long)]
    pub no_flooding: bool,
}

impl FloodingArgs {
    /// The library configuration with the defaults (40 bits, 1 query) for what is not
    /// given (`params select`: nothing is recorded yet).
    pub fn config(&self) -> hepeft::plan::SanitizeConfig {
        if self.no_flooding {
            hepeft::plan::SanitizeConfig::without_flooding()
        } else {
            hepeft::plan::SanitizeConfig {
                flooding: Some(hepeft::plan::FloodingConfig::new(
                    self.bits(),
                    self.flooding_queries.unwrap_or(1),
                )),
            }
        }
    }

    /// `--flooding-bits`, or the default.
    pub fn bits(&self) -> u32 {
        self.flooding_bits
            .unwrap_or(hepeft::plan::DEFAULT_STATISTICAL_SECURITY)
    }

    /// What the command line says, for [`hepeft::select::record::resolve_sanitize`].
    pub fn request(&self) -> hepeft::select::record::FloodingRequest {
        hepeft::select::record::FloodingRequest {
            bits: self.flooding_bits,
            queries: self.flooding_queries,
            off: self.no_flooding,
            profile: None,
        }
    }

    /// The warning `--no-flooding` prints.
    pub const WARNING: &'static str = "WARNING: noise flooding is OFF (--no-flooding): the decrypted error of every result depends on \
the adapter's weights and leaks information about them to the client. Use only with a trusted client.\n";
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Base URL of the service, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// Key directory written by `keygen` (secret.key, public.key, eval.keys).
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
    /// Features (.npy, one row per sample); repeat once per model input, in order.
    #[arg(long = "input", value_name = "NPY", required = true)]
    pub inputs: Vec<PathBuf>,
    /// Decrypted logits (.npy).
    #[arg(long, value_name = "NPY")]
    pub out: PathBuf,
    /// Classes to print per sample.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub top_k: usize,
    /// File holding the access token (first non-comment line); the environment variable
    /// HEPEFT_TOKEN is used when this is absent.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Which scheme a command uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// RNS-CKKS (approximate arithmetic, polynomial activations).
    Ckks,
    /// TFHE via tfhe-rs (quantized integers, exact lookup-table activations); see docs/exact.md.
    Exact,
}

#[derive(Debug, Subcommand)]
pub enum ParamsCmd {
    /// List the frozen presets.
    List,
    /// Show one parameter set (a preset name or a TOML file).
    Show {
        /// Preset name (see `params list`) or path of a parameter TOML file.
        #[arg(value_parser = parse_params_source, value_name = "NAME|FILE")]
        params: ParamsSource,
    },
    /// Choose parameters for a model: depth from its plan, scale from the precision wanted.
    Select(SelectArgs),
}

#[derive(Debug, Args)]
pub struct SelectArgs {
    /// Model card (public or private: the structure selects the parameters; a private card's
    /// weights also calibrate the error bound and the logit size).
    #[arg(long, value_name = "CARD")]
    pub model: PathBuf,
    /// Bits of precision wanted at the output, relative to the largest logit (measured on
    /// the card's weights; relative to a unit-sized logit for a public card).
    #[arg(long, default_value_t = 16, value_name = "BITS", value_parser = clap::value_parser!(u32).range(1..=50))]
    pub precision: u32,
    /// Security level in bits.
    #[arg(long, default_value = "128", value_parser = parse_security, value_name = "128|192|256")]
    pub security: Security,
    /// Samples per query (batch mode; implies --mode batch).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: Option<u64>,
    /// Packing layout.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Where to write the chosen parameters (TOML; with --backend exact the public
    /// quantization file, JSON).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub flooding: FloodingArgs,
    /// Scheme to select parameters for.
    #[arg(long, value_enum, default_value_t = Backend::Ckks)]
    pub backend: Backend,
    /// Calibration features (.npy, samples x width): the exact backend quantizes with them;
    /// the CKKS backend measures the adapter's logit size on them (precision counts relative
    /// to the largest logit; without them, on inputs uniform in [-1, 1]).
    #[arg(long, value_name = "NPY")]
    pub calib: Option<PathBuf>,
    /// Exact backend: low-nibble removal stages per hidden neuron (accumulators of 4J+5 bits).
    #[arg(long, default_value_t = 2, value_name = "J")]
    pub stages: u32,
    /// Exact backend: the server returns an encrypted one-hot vector of the predicted class
    /// instead of the logits (recorded in the quantization file; at most 16 classes).
    #[arg(long)]
    pub argmax: bool,
    /// Exact backend: choose among candidate settings (the default; J = 3 with 6-bit
    /// inputs; 6-bit hidden outputs on the 2^12 x 3 fine key; 6-bit tables) the cheapest
    /// whose integer twin agrees with the f64 model's argmax on at least this fraction of
    /// the calibration samples (in-sample; `--stages` is then ignored). Prints every
    /// candidate's agreement, estimated cost and key size.
    #[arg(long, value_name = "FRACTION")]
    pub min_agreement: Option<f64>,
    /// Exact backend, with --min-agreement: only candidates whose evaluation keys
    /// (transferred) fit this many MB.
    #[arg(long, value_name = "MB", requires = "min_agreement")]
    pub max_key_mb: Option<f64>,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Parameter set: a preset name or a TOML file (from `params select`); CKKS only.
    #[arg(long, value_parser = parse_params_source, value_name = "NAME|FILE")]
    pub params: Option<ParamsSource>,
    /// Scheme of the keys.
    #[arg(long, value_enum, default_value_t = Backend::Ckks)]
    pub backend: Backend,
    /// Model card (the public card is enough); with --backend exact the quantization file
    /// written by `params select --backend exact`.
    #[arg(long, value_name = "CARD")]
    pub model: PathBuf,
    /// Packing layout the keys are made for (default: the one the parameter file records,
    /// else latency).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Client pre-rotated input layout: the query carries up to K rotated copies of each
    /// input segment (a power of two; 1 = the replicated layout), which removes the server's
    /// baby-step rotations of the first layer at the cost of a query up to K times larger.
    /// Recorded in plan.json and the query's sidecar, which encrypt, evaluate and decrypt
    /// follow. Default: the plan compiler's choice (the cheapest of 1, 2, 4 and 8 copies by
    /// its cost model; keygen reports it and the query's ciphertexts).
    #[arg(long, value_name = "K")]
    pub pre_rotate: Option<usize>,
    /// Batch mode only: input features packed per query ciphertext (a power of two up to
    /// 16; 1 = one ciphertext per feature). A query then takes at most N/(2G) samples and
    /// is about G times smaller; the server unpacks it with G - 1 rotations per ciphertext.
    #[arg(long, value_name = "G", default_value_t = 1)]
    pub batch_pack: usize,
    /// Output directory (secret.key, public.key, eval.keys, params.toml, plan.json).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Overwrite an existing secret key in DIR.
    #[arg(long)]
    pub force: bool,
    /// Exact backend only: keys for results that are NOT sanitized (no public key in
    /// eval.keys; a plan without bootstrapping, a linear probe, then gets no bootstrapping
    /// key either: 64 KiB instead of ~90 MB). Results of such keys leak the weights
    /// (docs/threat-model.md). For tests and trusted clients only.
    #[arg(long)]
    pub no_flooding: bool,
}

#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// Key directory written by `keygen`.
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
    /// Scheme of the keys.
    #[arg(long, value_enum, default_value_t = Backend::Ckks)]
    pub backend: Backend,
    /// Model card (the public card is enough); with --backend exact the quantization file.
    #[arg(long, value_name = "CARD")]
    pub model: PathBuf,
    /// Features, samples x width (.npy, f32 or f64); repeat once per adapter input.
    #[arg(long, value_name = "NPY", required = true)]
    pub input: Vec<PathBuf>,
    /// The encrypted query; its metadata goes to `<OUT>.json`.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Model card with the real weights.
    #[arg(long, value_name = "CARD")]
    pub model: PathBuf,
    /// Weights file to use instead of the one the card names.
    #[arg(long, value_name = "SAFETENSORS")]
    pub weights: Option<PathBuf>,
    /// The client's evaluation keys (eval.keys).
    #[arg(long, value_name = "FILE")]
    pub eval_keys: PathBuf,
    /// Parameter set: a preset name or a TOML file (the client's params.toml); CKKS only.
    #[arg(long, value_parser = parse_params_source, value_name = "NAME|FILE")]
    pub params: Option<ParamsSource>,
    /// Scheme of the query.
    #[arg(long, value_enum, default_value_t = Backend::Ckks)]
    pub backend: Backend,
    /// Exact backend: the quantization file from `params select --backend exact`.
    #[arg(long, value_name = "FILE")]
    pub quant: Option<PathBuf>,
    /// Calibration features (.npy): the exact backend needs the ones the quantization file
    /// was made with; the CKKS backend measures the adapter's public error bound, which
    /// sizes the flooding, on them (one-input adapters; default: inputs uniform in [-1, 1]).
    #[arg(long, value_name = "NPY")]
    pub calib: Option<PathBuf>,
    /// The encrypted query (with its `<INPUT>.json` metadata).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// The encrypted result; its metadata goes to `<OUT>.json`.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub flooding: FloodingArgs,
}

#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// Key directory written by `keygen`.
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
    /// Scheme of the keys.
    #[arg(long, value_enum, default_value_t = Backend::Ckks)]
    pub backend: Backend,
    /// Model card (the public card is enough); with --backend exact the quantization file.
    #[arg(long, value_name = "CARD")]
    pub model: PathBuf,
    /// The encrypted result (with its `<INPUT>.json` metadata).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Decrypted logits, samples x classes (.npy, f64).
    #[arg(long, value_name = "NPY")]
    pub out: PathBuf,
    /// Classes printed per sample (highest logits first).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub top_k: usize,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Any hepeft file, parameter or model card (.toml/.json), features (.npy) or weights
    /// (.safetensors).
    pub file: PathBuf,
    /// Parameters to decode ciphertexts and keys with (default: a preset with the file's
    /// digest, or a params.toml next to the file).
    #[arg(long, value_parser = parse_params_source, value_name = "NAME|FILE")]
    pub params: Option<ParamsSource>,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The private model card (with weights).
    #[arg(long, value_name = "CARD")]
    pub model: PathBuf,
    /// Output directory for public.toml and public.safetensors.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Name recorded in the public card (default: the private card's name).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportPeftArgs {
    /// The checkpoint directory (adapter_config.json + adapter_model.safetensors, or one
    /// subfolder per named adapter).
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// The base model's weights (`<module>.weight`, `<module>.bias`).
    #[arg(long, value_name = "SAFETENSORS")]
    pub base: PathBuf,
    /// The head's base modules, input first (default: the base file's only linear module).
    #[arg(long, value_delimiter = ',', value_name = "MODULE,...")]
    pub head: Vec<String>,
    /// Activation between consecutive head modules (square, gelu, relu, silu, tanh,
    /// sigmoid, identity).
    #[arg(long, value_name = "FUNC")]
    pub activation: Option<String>,
    /// Interval of the activation's polynomial.
    #[arg(long, allow_hyphen_values = true, value_name = "LO,HI")]
    pub interval: Option<String>,
    /// Chebyshev degree of the activation's polynomial.
    #[arg(long, default_value_t = 15, value_name = "D")]
    pub degree: usize,
    /// In a directory of several named adapters, the one to import.
    #[arg(long, value_name = "NAME")]
    pub adapter_name: Option<String>,
    /// Ignore unknown config fields and tensors (listed as warnings) instead of refusing.
    #[arg(long)]
    pub allow_unknown: bool,
    /// Name recorded in the card.
    #[arg(long)]
    pub name: Option<String>,
    /// The card to write (.toml or .json); derived tensors go to `<stem>.safetensors` beside it.
    #[arg(long, value_name = "CARD")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep every file of the run (cards, keys, query, result, logits) in DIR.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Number of samples to classify.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub samples: u64,
    /// Embedded example to run.
    #[arg(long, value_enum, default_value_t = DemoModel::Reviews)]
    pub model: DemoModel,
    /// Packing layout.
    #[arg(long, value_enum, default_value_t = ModeArg::Latency)]
    pub mode: ModeArg,
    /// Scheme: CKKS, or the exact path (TFHE; quantized on held-out rows that are not
    /// queried, see docs/exact.md).
    #[arg(long, value_enum, default_value_t = Backend::Ckks)]
    pub backend: Backend,
    /// Run without noise flooding, on the adapter's preset (the client's decryption error
    /// then depends on the weights). Latency mode floods at 40 bits by default, with
    /// parameters from `params select`; batch mode cannot carry flooding and always runs
    /// without it.
    #[arg(long)]
    pub no_flooding: bool,
}

/// The embedded demo adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoModel {
    /// Real task: a bottleneck adapter (384-32-poly2-384 + residual + head) trained on
    /// all-MiniLM-L6-v2 embeddings of held-out fine-food reviews, 5 stars vs the rest
    /// (assets/real/finefoods; CKKS_N14_QP430_128).
    Reviews,
    /// Real task: a bottleneck adapter (64-32-poly2-64 + residual + head) trained on
    /// scikit-learn's 8x8 digits, 10 classes (assets/real/digits; CKKS_N14_QP430_128).
    Digits,
    /// Synthetic LoRA classifier head, d = 384, rank 8, 10 classes (CKKS_N13_QP200_128).
    Lora,
    /// Synthetic bottleneck adapter with a GELU fit and a residual, d = 128, hidden 16,
    /// 10 classes (CKKS_N14_QP430_128).
    Bottleneck,
}

/// Packing layout (see `hepeft::plan::Mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// One sample per query, vectors packed in slots (rotations).
    Latency,
    /// Up to N/2 samples per query, one ciphertext per feature (no rotations).
    Batch,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Latency => Mode::Latency,
            ModeArg::Batch => Mode::Batch,
        }
    }
}

/// Where a parameter set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamsSource {
    /// A preset of `params/`, by name.
    Preset(String),
    /// A TOML file.
    File(PathBuf),
}

impl ParamsSource {
    /// Loads and checks the parameter set.
    pub fn load(&self) -> anyhow::Result<CkksParams> {
        use anyhow::Context as _;
        match self {
            ParamsSource::Preset(name) => Ok(CkksParams::preset(name)?),
            ParamsSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading parameter file {}", path.display()))?;
                CkksParams::from_toml(&text)
                    .with_context(|| format!("parameter file {}", path.display()))
            }
        }
    }

    /// Loads the parameter set with its `[selected_for]` record, and the warning to print
    /// when a file has none (presets carry none and need none).
    pub fn load_file(&self) -> anyhow::Result<(hepeft::select::ParamsFile, Option<String>)> {
        use anyhow::Context as _;
        use hepeft::select::ParamsFile;
        match self {
            ParamsSource::Preset(name) => Ok((ParamsFile::bare(CkksParams::preset(name)?), None)),
            ParamsSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading parameter file {}", path.display()))?;
                let file = ParamsFile::from_toml(&text)
                    .with_context(|| format!("parameter file {}", path.display()))?;
                let warning = file
                    .record
                    .is_none()
                    .then(|| ParamsFile::missing_record_warning(&path.display().to_string()));
                Ok((file, warning))
            }
        }
    }

    /// For messages.
    pub fn label(&self) -> String {
        match self {
            ParamsSource::Preset(n) => n.clone(),
            ParamsSource::File(p) => p.display().to_string(),
        }
    }
}

/// A preset name or an existing file; anything else is a usage error (exit 2).
fn parse_params_source(s: &str) -> Result<ParamsSource, String> {
    let path = std::path::Path::new(s);
    if path.is_file() {
        return Ok(ParamsSource::File(path.to_path_buf()));
    }
    if let Some((name, _)) = PRESETS.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
        return Ok(ParamsSource::Preset((*name).to_string()));
    }
    Err(format!(
        "unknown preset {s:?} and no file of that name; known presets: {}",
        PRESETS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn parse_security(s: &str) -> Result<Security, String> {
    match s {
        "128" | "192" | "256" => Security::parse(s).map_err(|e| e.to_string()),
        _ => Err(format!(
            "{s:?} is not a security level (use 128, 192 or 256)"
        )),
    }
}
