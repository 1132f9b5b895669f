//! Token model cards: a [`TokenAdapter`] as TOML or JSON plus a safetensors file
//! (docs/model-card.md, "Token model cards").
//!
//! ```toml
//! version = 1
//! kind = "token"
//! tokens = 64
//! weights = "owc.safetensors"
//! inputs = [{ name = "h1", dim = 384 }]
//! [[nodes]]
//! name = "a1.down"
//! op = "linear"
//! inputs = ["h1"]
//! weight = "a1.down.weight"
//! ```

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::activation::{Activation, ActivationFn};
use super::card::{CardFormat, InputCard, MAX_CARD_BYTES};
use super::layer::NodeRef;
use super::load::read_text_limited;
use super::tensors::TensorStore;
use super::token::{LinearAttention, Pooling, TokenAdapter, TokenAdapterBuilder, TokenOp};
use crate::{Error, Result};

/// Format version of token cards.
pub const TOKEN_CARD_VERSION: u32 = 1;

/// One node of a token card; only the fields of its `op` may be set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenNodeCard {
    /// Unique name.
    pub name: String,
    /// `linear`, `low_rank`, `affine`, `scale`, `poly`, `add`, `linear_attention`, `pool`.
    pub op: String,
    /// Operand names (inputs or earlier nodes).
    pub inputs: Vec<String>,
    /// Tensor names / values of the op (see docs/model-card.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<String>,
    /// Bias tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<String>,
    /// LoRA `A` tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<String>,
    /// LoRA `B` tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<String>,
    /// Scalar factor (`low_rank`, `scale`, attention's Q factor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Affine multiplier tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mul: Option<String>,
    /// Affine offset tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<String>,
    /// `poly`: interval `[lo, hi]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<[f64; 2]>,
    /// `poly`: Chebyshev coefficients (in `t`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cheb: Option<Vec<f64>>,
    /// `poly`: the approximated function (with `degree` and no `cheb`: fitted here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub func: Option<String>,
    /// `poly`: degree of the fit (with `func`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degree: Option<usize>,
    /// `linear_attention`: heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<usize>,
    /// `linear_attention`: `qkv`, shape `3r x r`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qkv: Option<String>,
    /// `linear_attention`: optional `qkv_bias`, length `3r`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qkv_bias: Option<String>,
    /// `linear_attention`: `mix`, shape `T x T`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<String>,
    /// `linear_attention`: optional `mix_bias`, length `T`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix_bias: Option<String>,
    /// `linear_attention`: `proj`, shape `r x r`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proj: Option<String>,
    /// `linear_attention`: optional `proj_bias`, length `r`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proj_bias: Option<String>,
    /// `pool`: `cls` or `mean`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<String>,
}

/// A token model card.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCard {
    /// Format version, 1.
    pub version: u32,
    /// Always `"token"`.
    pub kind: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tokens `T` of every input.
    pub tokens: usize,
    /// The safetensors file with the tensors the nodes name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// Inputs (`T x dim` each), in evaluation order.
    pub inputs: Vec<InputCard>,
    /// Nodes in topological order; the last is the output.
    pub nodes: Vec<TokenNodeCard>,
}

fn field<'a, T>(v: &'a Option<T>, node: &str, what: &str) -> Result<&'a T> {
    v.as_ref()
        .ok_or_else(|| Error::model(format!("token card node {node}: missing field `{what}`")))
}

impl TokenCard {
    /// Parses TOML or JSON text.
    ///
    /// # Errors
    /// [`Error::Format`] for a syntax error or an unknown field.
    pub fn from_str(text: &str, format: CardFormat) -> Result<Self> {
        let card: TokenCard = match format {
            CardFormat::Toml => toml::from_str(text)
                .map_err(|e| Error::format("token model card (TOML)", e.to_string()))?,
            CardFormat::Json => serde_json::from_str(text)
                .map_err(|e| Error::format("token model card (JSON)", e.to_string()))?,
        };
        if card.version != TOKEN_CARD_VERSION || card.kind != "token" {
            return Err(Error::format(
                "token model card",
                format!(
                    "expected version = {TOKEN_CARD_VERSION} and kind = \"token\", got version {} kind {:?}",
                    card.version, card.kind
                ),
            ));
        }
        Ok(card)
    }

    /// Builds the adapter, reading tensors from `store`.
    ///
    /// # Errors
    /// Missing fields or tensors, shape errors naming the node.
    pub fn to_adapter(&self, store: Option<&TensorStore>) -> Result<TokenAdapter> {
        let mut b = TokenAdapterBuilder::new(self.tokens);
        let mut names: Vec<(String, NodeRef)> = Vec::new();
        for i in &self.inputs {
            let r = b.input(&i.name, i.dim)?;
            names.push((i.name.clone(), r));
        }
        let need_store = || {
            store.ok_or_else(|| Error::model("token card names tensors but has no `weights` file"))
        };
        for n in &self.nodes {
            let nm = n.name.as_str();
            let mat = |t: &Option<String>, what: &str| -> Result<Array2<f64>> {
                need_store()?.matrix(field(t, nm, what)?)
            };
            let vec_opt = |t: &Option<String>| -> Result<Option<Array1<f64>>> {
                match t {
                    Some(name) => Ok(Some(need_store()?.vector(name)?)),
                    None => Ok(None),
                }
            };
            let op = match n.op.as_str() {
                "linear" => TokenOp::Linear {
                    weight: mat(&n.weight, "weight")?,
                    bias: vec_opt(&n.bias)?,
                },
                "low_rank" => TokenOp::LowRank {
                    a: mat(&n.a, "a")?,
                    b: mat(&n.b, "b")?,
                    scale: *field(&n.scale, nm, "scale")?,
                    bias: vec_opt(&n.bias)?,
                },
                "affine" => TokenOp::Affine {
                    mul: need_store()?.vector(field(&n.mul, nm, "mul")?)?,
                    add: need_store()?.vector(field(&n.add, nm, "add")?)?,
                },
                "scale" => TokenOp::Scale(*field(&n.scale, nm, "scale")?),
                "poly" => {
                    let [lo, hi] = *field(&n.interval, nm, "interval")?;
                    let func = n.func.as_deref().map(ActivationFn::from_name).transpose()?;
                    let act = match (&n.cheb, func, n.degree) {
                        (Some(c), f, _) => {
                            let mut a = Activation::from_chebyshev(c.clone(), lo, hi)?;
                            a.func = f;
                            a
                        }
                        (None, Some(f), Some(d)) => Activation::fit(f, lo, hi, d)?,
                        _ => {
                            return Err(Error::model(format!(
                                "token card node {nm}: poly needs `cheb`, or `func` and `degree`"
                            )))
                        }
                    };
                    TokenOp::Poly(act)
                }
                "add" => TokenOp::Add,
                "linear_attention" => TokenOp::LinearAttention(Box::new(LinearAttention {
                    heads: *field(&n.heads, nm, "heads")?,
                    qkv: mat(&n.qkv, "qkv")?,
                    qkv_bias: vec_opt(&n.qkv_bias)?,
                    scale: *field(&n.scale, nm, "scale")?,
                    mix: mat(&n.mix, "mix")?,
                    mix_bias: vec_opt(&n.mix_bias)?,
                    proj: mat(&n.proj, "proj")?,
                    proj_bias: vec_opt(&n.proj_bias)?,
                })),
                "pool" => TokenOp::Pool(Pooling::from_name(field(&n.pooling, nm, "pooling")?)?),
                other => {
                    return Err(Error::model(format!(
                        "token card node {nm}: unknown op {other:?} (linear, low_rank, affine, scale, poly, add, linear_attention, pool)"
                    )))
                }
            };
            let inputs: Vec<NodeRef> = n
                .inputs
                .iter()
                .map(|x| {
                    names
                        .iter()
                        .find(|(k, _)| k == x)
                        .map(|(_, r)| *r)
                        .ok_or_else(|| {
                            Error::model(format!(
                                "token card node {nm}: operand {x:?} is not an input or an earlier node"
                            ))
                        })
                })
                .collect::<Result<_>>()?;
            let r = b.node(nm, op, &inputs)?;
            names.push((n.name.clone(), r));
        }
        b.build()
    }

    /// The card and tensors of `adapter` (tensor names `<node>.<field>`).
    ///
    /// # Errors
    /// Only on inconsistent tensors (a bug).
    pub fn from_adapter(adapter: &TokenAdapter, name: Option<&str>) -> Result<(Self, TensorStore)> {
        let mut store = TensorStore::new();
        let mut put_m = |n: &str, f: &str, m: &Array2<f64>| -> Result<Option<String>> {
            let key = format!("{n}.{f}");
            store.insert(
                &key,
                vec![m.nrows(), m.ncols()],
                m.iter().copied().collect(),
            )?;
            Ok(Some(key))
        };
        let mut mats: Vec<(String, String, Array2<f64>)> = Vec::new();
        let mut vecs: Vec<(String, String, Array1<f64>)> = Vec::new();
        let mut nodes = Vec::new();
        for n in adapter.nodes() {
            let nm = n.name.clone();
            let mut c = TokenNodeCard {
                name: nm.clone(),
                op: n.op.kind().to_string(),
                inputs: n
                    .inputs
                    .iter()
                    .map(|&r| adapter.name_of(r).to_string())
                    .collect(),
                ..Default::default()
            };
            let key = |f: &str| Some(format!("{nm}.{f}"));
            let mut m = |f: &str, a: &Array2<f64>| {
                mats.push((nm.clone(), f.to_string(), a.clone()));
                key(f)
            };
            let mut v = |f: &str, a: &Option<Array1<f64>>| {
                a.as_ref().and_then(|a| {
                    vecs.push((nm.clone(), f.to_string(), a.clone()));
                    key(f)
                })
            };
            match &n.op {
                TokenOp::Linear { weight, bias } => {
                    c.weight = m("weight", weight);
                    c.bias = v("bias", bias);
                }
                TokenOp::LowRank { a, b, scale, bias } => {
                    c.a = m("a", a);
                    c.b = m("b", b);
                    c.scale = Some(*scale);
                    c.bias = v("bias", bias);
                }
                TokenOp::Affine { mul, add } => {
                    c.mul = v("mul", &Some(mul.clone()));
                    c.add = v("add", &Some(add.clone()));
                }
                TokenOp::Scale(f) => c.scale = Some(*f),
                TokenOp::Poly(act) => {
                    let (lo, hi) = act.interval();
                    c.interval = Some([lo, hi]);
                    c.cheb = Some(act.cheb.clone());
                    c.func = act.func.map(|f| f.name().to_string());
                }
                TokenOp::Add => {}
                TokenOp::LinearAttention(at) => {
                    c.heads = Some(at.heads);
                    c.scale = Some(at.scale);
                    c.qkv = m("qkv", &at.qkv);
                    c.qkv_bias = v("qkv_bias", &at.qkv_bias);
                    c.mix = m("mix", &at.mix);
                    c.mix_bias = v("mix_bias", &at.mix_bias);
                    c.proj = m("proj", &at.proj);
                    c.proj_bias = v("proj_bias", &at.proj_bias);
                }
                TokenOp::Pool(p) => c.pooling = Some(p.name().to_string()),
            }
            nodes.push(c);
        }
        for (n, f, a) in &mats {
            put_m(n, f, a)?;
        }
        for (n, f, a) in vecs {
            store.insert(&format!("{n}.{f}"), vec![a.len()], a.to_vec())?;
        }
        let card = TokenCard {
            version: TOKEN_CARD_VERSION,
            kind: "token".into(),
            name: name.map(str::to_string),
            tokens: adapter.tokens(),
            weights: None,
            inputs: adapter
                .inputs()
                .iter()
                .map(|i| InputCard {
                    name: i.name.clone(),
                    dim: i.dim,
                })
                .collect(),
            nodes,
        };
        Ok((card, store))
    }
}

/// Loads a token card (at most 1 MiB, TOML or JSON by extension) and its weights file
/// (relative to the card's directory).
///
/// # Errors
/// As [`TokenCard::from_str`], [`TensorStore::from_path`], [`TokenCard::to_adapter`].
pub fn load_token_card(path: impl AsRef<Path>) -> Result<TokenAdapter> {
    let path = path.as_ref();
    let format = CardFormat::from_path(path)?;
    let text = read_text_limited(path, MAX_CARD_BYTES, "token model card")?;
    let card = TokenCard::from_str(&text, format)?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let store = match &card.weights {
        Some(w) => {
            let p = Path::new(w);
            let p = if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            };
            Some(TensorStore::from_path(p)?)
        }
        None => None,
    };
    card.to_adapter(store.as_ref())
}

/// Whether `path` is a token model card (TOML or JSON with `kind = "token"`): how the CLI
/// tells token cards from pooled ones. One bounded file read; false when unreadable.
pub fn is_token_card(path: impl AsRef<Path>) -> bool {
    let path = path.as_ref();
    let Ok(format) = CardFormat::from_path(path) else {
        return false;
    };
    let Ok(text) = read_text_limited(path, MAX_CARD_BYTES, "model card") else {
        return false;
    };
    let kind = match format {
        CardFormat::Toml => toml::from_str::<toml::Table>(&text)
            .ok()
            .and_then(|t| t.get("kind").and_then(|k| k.as_str().map(String::from))),
        CardFormat::Json => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str().map(String::from))),
    };
    kind.as_deref() == Some("token")
}

/// Writes `adapter` as a token card at `card_path` (TOML or JSON by extension) and its
/// tensors as F64 safetensors `<card stem>.safetensors` next to it; returns the weights path.
///
/// # Errors
/// I/O errors; a card path without a file name.
pub fn save_token_adapter(
    adapter: &TokenAdapter,
    card_path: impl AsRef<Path>,
    name: Option<&str>,
) -> Result<PathBuf> {
    let card_path = card_path.as_ref();
    let format = CardFormat::from_path(card_path)?;
    let stem = card_path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| {
            Error::format(
                "token model card",
                format!("{}: no usable file name", card_path.display()),
            )
        })?;
    let weights_name = format!("{stem}.safetensors");
    let weights_path = card_path.with_file_name(&weights_name);
    let (mut card, store) = TokenCard::from_adapter(adapter, name)?;
    card.weights = Some(weights_name);
    store.write(&weights_path)?;
    let text = match format {
        CardFormat::Toml => toml::to_string(&card)
            .map_err(|e| Error::format("token model card (TOML)", e.to_string()))?,
        CardFormat::Json => serde_json::to_string_pretty(&card)
            .map_err(|e| Error::format("token model card (JSON)", e.to_string()))?,
    };
    std::fs::write(card_path, text).map_err(|e| Error::io(card_path, e))?;
    Ok(weights_path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::unreachable)]
mod tests {
    use super::*;
    use crate::model::token::{evaluate_tokens, random_owc, uniform_tokens, OwcShape};
    use rand::SeedableRng;

    #[test]
    fn owc_round_trips_through_toml_and_json_cards() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let sh = OwcShape {
            tokens: 5,
            d: 6,
            r: 4,
            heads: 2,
            taps: 2,
            classes: 3,
        };
        let ad = random_owc(&mut rng, sh).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for ext in ["toml", "json"] {
            let p = dir.path().join(format!("owc.{ext}"));
            save_token_adapter(&ad, &p, Some("test")).unwrap();
            let back = load_token_card(&p).unwrap();
            assert_eq!(back, ad);
            let xs = uniform_tokens(&mut rng, &ad, 1).remove(0);
            assert_eq!(
                evaluate_tokens(&back, &xs).unwrap().output,
                evaluate_tokens(&ad, &xs).unwrap().output
            );
        }
    }

    #[test]
    fn bad_cards_name_the_problem() {
        let text =
            "version = 1\nkind = \"token\"\ntokens = 4\ninputs = [{ name = \"x\", dim = 2 }]\n\
                    [[nodes]]\nname = \"p\"\nop = \"pool\"\ninputs = [\"x\"]\npooling = \"max\"\n";
        let card = TokenCard::from_str(text, CardFormat::Toml).unwrap();
        let e = card.to_adapter(None).unwrap_err();
        assert!(e.to_string().contains("mean"), "{e}");
        let e = TokenCard::from_str(
            &text.replace("kind = \"token\"", "kind = \"x\""),
            CardFormat::Toml,
        )
        .unwrap_err();
        assert!(e.to_string().contains("kind"), "{e}");
        let e = TokenCard::from_str(&format!("{text}typo = 1\n"), CardFormat::Toml).unwrap_err();
        assert!(e.to_string().contains("typo"), "{e}");
        let t2 = text.replace("op = \"pool\"", "op = \"linear\"");
        let e = TokenCard::from_str(&t2, CardFormat::Toml)
            .unwrap()
            .to_adapter(None)
            .unwrap_err();
        assert!(e.to_string().contains("weight"), "{e}");
    }
}
