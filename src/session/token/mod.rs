//! The client/server protocol for token-level adapters ([`TokenAdapter`], CryptPEFT's OWC
//! side networks; see `docs/token-adapters.md`), beside the pooled-feature one of the
//! parent module, with the same files, envelopes, bindings and sanitization:
//!
//! | piece | module | what |
//! |---|---|---|
//! | the compiled model | here | [`TokenModel`]: fused adapter, [`TokenPlan`], structure digest |
//! | key directory | [`keydir`] | `plan.json` as [`TokenPlanInfo`] (`hepeft-token-plan/1`), [`TokenKeyDir`] |
//! | client | [`client`] | [`TokenClient`]: keygen, encrypt token matrices, decrypt |
//! | server | [`server`] | [`TokenServer`]: check keys, evaluate, sanitize every result |
//!
//! One sample per query (the token plan's latency layout): a query of `S` samples holds
//! `S` queries of [`TokenPlan::query_ciphertexts`] ciphertexts each (every tapped layer's
//! `T x d` matrix packed), bound like pooled queries ([`Binding`]) to the key set and the
//! token structure digest. The batch layout (many samples per ciphertext,
//! [`TokenBatchPlan`](crate::plan::token::TokenBatchPlan)) exists in the library but not in
//! the protocol yet (keys, files, sanitization): [`refuse_batch`] says so.

pub mod client;
pub mod keydir;
pub mod server;

pub use client::TokenClient;
pub use keydir::{TokenKeyDir, TokenPlanInfo, TOKEN_PLAN_FORMAT};
pub use server::TokenServer;

use sha2::{Digest, Sha256};

use crate::ckks::CkksParams;
use crate::io::binding::{Binding, KeySetId, Role};
use crate::model::layer::NodeRef;
use crate::model::token::{TokenAdapter, TokenOp};
use crate::plan::token::{fuse_tokens, TokenPlan};
use crate::{Error, Result};

/// The mode name token plans carry in `plan.json` and ciphertext sidecars.
pub const TOKEN_MODE: &str = "token";

/// The refusal for a batch layout of token adapters in the protocol (the library's
/// [`TokenBatchPlan`](crate::plan::token::TokenBatchPlan) has one; the key directory,
/// query files and sanitization do not carry it yet).
///
/// # Errors
/// Always [`Error::Refused`].
pub fn refuse_batch() -> Result<()> {
    Err(Error::Refused {
        reason: "the token session and command line have no batch layout yet (the library's \
                 hepeft::plan::token::TokenBatchPlan packs many samples per ciphertext, docs/token-adapters.md): \
                 token cards run one sample per query (the latency layout), several samples as several queries; \
                 drop --mode batch / --batch"
            .into(),
    })
}

/// A token adapter compiled for a parameter set: the adapter after
/// [`fuse_tokens`] (what both sides evaluate and schedule), its [`TokenPlan`], and the
/// digest of its structure (what keys, queries and results are bound to). The client
/// compiles it from the public card, the server from the card with weights: the same
/// structure gives the same plan and digest.
#[derive(Clone, Debug)]
pub struct TokenModel {
    /// The fused adapter.
    pub adapter: TokenAdapter,
    /// Its level schedule and keys.
    pub plan: TokenPlan,
    /// The parameters.
    pub params: CkksParams,
    /// [`token_structure_digest`].
    pub structure: [u8; 32],
}

impl TokenModel {
    /// Fuses `adapter` ([`fuse_tokens`]) and compiles it under `params`. Costs the fusion
    /// (a few small matrix products) and the schedule.
    ///
    /// # Errors
    /// As [`fuse_tokens`] and [`TokenPlan::compile`].
    pub fn compile(adapter: &TokenAdapter, params: &CkksParams) -> Result<TokenModel> {
        let adapter = fuse_tokens(adapter)?;
        let plan = TokenPlan::compile(&adapter, params)?;
        let structure = token_structure_digest(&adapter, &plan, params);
        Ok(TokenModel {
            adapter,
            plan,
            params: params.clone(),
            structure,
        })
    }

    /// Ciphertexts per query (one sample: every input packed).
    pub fn query_ciphertexts(&self) -> usize {
        self.plan.query_ciphertexts(&self.adapter)
    }

    /// Ciphertexts per result.
    pub fn result_ciphertexts(&self) -> usize {
        self.plan.result_ciphertexts()
    }

    /// Output values per sample (`rows x width`: the classes after pooling).
    pub fn output_dim(&self) -> usize {
        self.plan.output_values()
    }

    /// Widths `d` of the inputs (each `T x d`).
    pub fn input_dims(&self) -> Vec<usize> {
        self.adapter.inputs().iter().map(|i| i.dim).collect()
    }

    /// Galois elements of the plan.
    pub fn galois_elements(&self) -> Vec<crate::ckks::GaloisElement> {
        self.plan.galois_elements(&self.params)
    }

    /// The binding of a query of `samples` samples (one per query) under `key_set`.
    pub fn query_binding(&self, key_set: KeySetId, samples: usize) -> Binding {
        Binding {
            role: Role::Query,
            key_set,
            structure: self.structure,
            per_query: self.query_ciphertexts() as u32,
            queries: vec![1; samples],
        }
    }

    /// Checks a binding against this model: `role`, `key_set`, the structure digest, the
    /// ciphertexts per query (`per`) and `ciphertexts` in all, one sample per query.
    ///
    /// # Errors
    /// [`Error::Mismatch`] or [`Error::DimensionMismatch`] naming the field.
    pub fn check_binding(
        &self,
        b: &Binding,
        role: Role,
        key_set: KeySetId,
        per: usize,
        ciphertexts: usize,
    ) -> Result<()> {
        let what = role.name();
        crate::session::binding::check_role(b, role, "the ciphertext")?;
        crate::session::binding::check_key_set(
            b.key_set,
            key_set,
            &format!("the {what}"),
            "the keys",
        )?;
        if b.structure != self.structure {
            return Err(Error::mismatch(
                "plan",
                format!(
                    "the {what} was made for a token plan with structure digest {}, this one is {} (another \
                     token card or parameter set)",
                    short(&b.structure),
                    short(&self.structure)
                ),
            ));
        }
        if b.per_query as usize != per || b.queries.is_empty() || b.queries.iter().any(|&q| q != 1)
        {
            return Err(Error::mismatch(
                "plan",
                format!(
                    "the {what} is bound to {} ciphertexts per query and queries {:?}; this token plan has {per} \
                     per query and one sample per query",
                    b.per_query, b.queries
                ),
            ));
        }
        let want = b.queries.len() * per;
        if want != ciphertexts {
            return Err(Error::dims(
                format!("ciphertexts of the {what}"),
                want,
                ciphertexts,
            ));
        }
        Ok(())
    }
}

fn short(d: &[u8; 32]) -> String {
    crate::io::format::digest_hex(d).chars().take(16).collect()
}

/// SHA-256 over what the encrypted evaluation depends on, never a weight value: the
/// parameter digest, the tokens, the inputs (names, widths), every node (name, kind,
/// operands, shape, activation degree and interval, attention heads, pooling), the
/// layouts, the rotation steps and whether a relinearization key is used. A few hundred
/// bytes hashed.
pub fn token_structure_digest(
    adapter: &TokenAdapter,
    plan: &TokenPlan,
    params: &CkksParams,
) -> [u8; 32] {
    let mut s = format!(
        "hepeft-token-structure/1\nparams {}\ntokens {}\n",
        crate::io::format::digest_hex(&params.digest()),
        adapter.tokens()
    );
    for i in adapter.inputs() {
        s.push_str(&format!("input {} {}\n", i.name, i.dim));
    }
    for (n, layout) in adapter.nodes().iter().zip(plan.layouts()) {
        let ins: Vec<String> = n
            .inputs
            .iter()
            .map(|r| match r {
                NodeRef::Input(i) => format!("i{i}"),
                NodeRef::Node(k) => format!("n{k}"),
            })
            .collect();
        let extra = match &n.op {
            TokenOp::Poly(a) => format!("deg {} on [{:e}, {:e}]", a.degree(), a.lo, a.hi),
            TokenOp::LinearAttention(at) => format!("heads {}", at.heads),
            TokenOp::Pool(p) => p.name().to_string(),
            _ => String::new(),
        };
        s.push_str(&format!(
            "node {} {} ({}) {}x{} {layout:?} {extra}\n",
            n.name,
            n.op.kind(),
            ins.join(","),
            n.shape.0,
            n.shape.1
        ));
    }
    s.push_str(&format!(
        "steps {:?}\nrelin {}\n",
        plan.rotation_steps(),
        plan.needs_relin()
    ));
    Sha256::digest(s.as_bytes()).into()
}
