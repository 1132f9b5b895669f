//! `adapter_config.json` of Hugging Face PEFT LoRA-family checkpoints ([`PeftConfig`]):
//! every field PEFT (0.21) writes is applied, ignored with a reason, or refused
//! ([`config_field_policy`]); keys of `rank_pattern` / `alpha_pattern` / `target_modules`
//! are matched as PEFT matches them (Python regular expressions).
//!
//! Size: one concern (the field-by-field policy for `adapter_config.json`); about 60 lines are unit tests.

use std::path::Path;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::load::read_text_limited;
use crate::{Error, Result};

/// Largest `adapter_config.json` read (1 MiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// How a checkpoint is read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeftOptions {
    /// Ignore unknown config fields and tensors instead of refusing the checkpoint. They are
    /// listed in [`PeftLora::warnings`](super::peft::PeftLora::warnings); callers must show them (the CLI prints them).
    pub allow_unknown: bool,
    /// In a directory holding several named adapters (one subfolder each, as PEFT's
    /// `save_pretrained` writes them), the one to load.
    pub adapter_name: Option<String>,
}

/// PEFT's `bias` setting: which biases were trained and saved with the adapter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BiasMode {
    /// `"none"`: no bias saved.
    #[default]
    None,
    /// `"all"`: every bias of the model saved (`<m>.base_layer.bias` of adapted layers,
    /// `<m>.bias` of the others); each replaces the base one.
    All,
    /// `"lora_only"`: the biases of adapted layers saved as `<m>.base_layer.bias`; each
    /// replaces the base one.
    LoraOnly,
}

/// `target_modules` / `exclude_modules`: a list of names (matched exactly or as a dotted
/// suffix) or one regular expression (matched against the whole module name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleSelector {
    /// Names.
    List(Vec<String>),
    /// A regular expression (Python `re.fullmatch`).
    Regex(String),
}

/// The parsed `adapter_config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftConfig {
    /// `peft_type`, must be `"LORA"` when present.
    pub peft_type: Option<String>,
    /// Default rank.
    pub r: usize,
    /// Default alpha.
    pub lora_alpha: f64,
    /// rsLoRA: scale `alpha / sqrt(r)` instead of `alpha / r`.
    pub use_rslora: bool,
    /// DoRA: every adapted layer has a `lora_magnitude_vector`.
    pub use_dora: bool,
    /// KaSA (`kasa_config` set): every adapted layer has a `lora_diag` and PEFT truncates its
    /// base weight.
    pub kasa: bool,
    /// Per-module rank overrides, in file order (PEFT takes the first key that matches).
    pub rank_pattern: Vec<(String, usize)>,
    /// Per-module alpha overrides, in file order.
    pub alpha_pattern: Vec<(String, f64)>,
    /// Which biases the checkpoint carries.
    pub bias: BiasMode,
    /// Modules saved in full; each replaces the base module.
    pub modules_to_save: Vec<String>,
    /// The base layers store their weight `[in, out]` (GPT-2 `Conv1D`).
    pub fan_in_fan_out: bool,
    /// `lora_B` has a bias.
    pub lora_bias: bool,
    /// Which modules PEFT adapted (checked against the tensors).
    pub target_modules: Option<ModuleSelector>,
    /// Which modules PEFT skipped (checked against the tensors).
    pub exclude_modules: Option<ModuleSelector>,
    /// Layer indices PEFT adapted (checked against the tensors).
    pub layers_to_transform: Option<Vec<i64>>,
    /// Names of the layer lists `layers_to_transform` indexes.
    pub layers_pattern: Vec<String>,
    /// Unknown fields, ignored because [`PeftOptions::allow_unknown`] was set.
    pub unknown_fields: Vec<String>,
}

/// What the loader does with a field of `adapter_config.json` (see [`config_field_policy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldPolicy {
    /// Read and applied (or checked against the tensors).
    Applied,
    /// Cannot change the output at inference; the reason.
    Ignored(&'static str),
    /// Refused unless unset (null, false, empty); the reason.
    RefusedIfSet(&'static str),
}

/// The policy for every `adapter_config.json` field PEFT 0.21 writes for LoRA; `None` for an
/// unknown field. `docs/model-card.md` lists the same table.
pub fn config_field_policy(field: &str) -> Option<FieldPolicy> {
    use FieldPolicy::*;
    const META: &str = "metadata";
    const INIT: &str = "adapter initialisation only; the trained tensors are what is saved";
    Some(match field {
        "peft_type"
        | "r"
        | "lora_alpha"
        | "use_rslora"
        | "use_dora"
        | "kasa_config"
        | "rank_pattern"
        | "alpha_pattern"
        | "bias"
        | "modules_to_save"
        | "fan_in_fan_out"
        | "lora_bias"
        | "target_modules"
        | "exclude_modules"
        | "layers_to_transform"
        | "layers_pattern"
        | "init_lora_weights" => Applied,
        "task_type"
        | "base_model_name_or_path"
        | "revision"
        | "inference_mode"
        | "auto_mapping"
        | "peft_version" => Ignored(META),
        "lora_dropout" => Ignored("dropout is the identity at inference"),
        "eva_config" | "corda_config" | "lora_ga_config" => Ignored(INIT),
        "qalora_group_size" => Ignored("used only with use_qalora"),
        "megatron_core" => Ignored("a module path used only with megatron_config"),
        "runtime_config" => Ignored("runtime placement only"),
        "loftq_config" => RefusedIfSet("LoftQ replaces the base weights with quantized ones"),
        "use_qalora" => RefusedIfSet("QALoRA pools the input in groups: not a plain LoRA"),
        "megatron_config" => RefusedIfSet("Megatron tensor-parallel layers are not supported"),
        "target_parameters" => {
            RefusedIfSet("LoRA on bare parameters (MoE experts) is not supported")
        }
        "trainable_token_indices" => {
            RefusedIfSet("trainable tokens change embeddings, which run on the client")
        }
        "alora_invocation_tokens" => RefusedIfSet("activated LoRA depends on the token sequence"),
        "arrow_config" => RefusedIfSet("Arrow routes between adapters per token"),
        "velora_config" => RefusedIfSet("VeLoRA is not supported"),
        "monteclora_config" => RefusedIfSet("MonteCLoRA samples its update"),
        "use_bdlora" => RefusedIfSet("BD-LoRA (block-diagonal LoRA factors) is not supported"),
        "layer_replication" => RefusedIfSet("layer replication changes the base model's layers"),
        "ensure_weight_tying" => RefusedIfSet("tied embedding weights are not supported"),
        _ => return None,
    })
}

/// The values of `init_lora_weights` that only initialise the adapter tensors (others, such
/// as `"pissa"`, `"olora"`, `"corda"`, `"loftq"`, `"mica"`, `"lora_ga"`, change the base
/// weights PEFT applies the adapter to, and are refused).
pub const HARMLESS_INITS: &[&str] = &["gaussian", "eva", "orthogonal"];

fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::String(s) => !s.is_empty(),
        Value::Number(_) => true,
    }
}

/// A JSON object's entries in file order (serde_json's map would sort them).
fn ordered_map<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<(String, Value)>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<(String, Value)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object or null")
        }
        fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_none<E>(self) -> std::result::Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut m: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut v = Vec::new();
            while let Some((k, x)) = m.next_entry::<String, Value>()? {
                v.push((k, x));
            }
            Ok(v)
        }
    }
    d.deserialize_any(V)
}

#[derive(Deserialize)]
struct OrderedPatterns {
    #[serde(default, deserialize_with = "ordered_map")]
    rank_pattern: Vec<(String, Value)>,
    #[serde(default, deserialize_with = "ordered_map")]
    alpha_pattern: Vec<(String, Value)>,
}

/// Compiles a Python regular expression for the `regex` crate, anchored as `^(?:p)$`
/// (`fullmatch`) or `^(?:p)` (`match`).
fn python_regex(p: &str, full: bool, field: &str) -> Result<regex::Regex> {
    python_regex_for(p, full, field, p)
}

/// [`python_regex`] for a pattern built around the config key `key` (named in errors).
fn python_regex_for(p: &str, full: bool, field: &str, key: &str) -> Result<regex::Regex> {
    let anchored = if full {
        format!("^(?:{p})$")
    } else {
        format!("^(?:{p})")
    };
    regex::Regex::new(&anchored).map_err(|e| {
        Error::model(format!(
            "adapter_config.json: {field} key '{key}' is not a regular expression this loader can match as PEFT does: {e}"
        ))
    })
}

/// PEFT's `get_pattern_key`: the first key `k` (in file order) such that
/// `re.match(r"(.*\.)?(k)$", module)` succeeds; failing that, `module` itself if it is a key.
fn pattern_lookup<'a, V>(
    patterns: &'a [(String, V)],
    module: &str,
    field: &str,
) -> Result<Option<(&'a str, &'a V)>> {
    for (k, v) in patterns {
        if python_regex_for(&format!(r"(.*\.)?({k})$"), false, field, k)?.is_match(module) {
            return Ok(Some((k.as_str(), v)));
        }
    }
    Ok(patterns
        .iter()
        .find(|(k, _)| k == module)
        .map(|(k, v)| (k.as_str(), v)))
}

fn selector(v: &Value, field: &str) -> Result<Option<ModuleSelector>> {
    Ok(match v {
        Value::Null => None,
        Value::String(s) => Some(ModuleSelector::Regex(s.clone())),
        Value::Array(a) => Some(ModuleSelector::List(
            a.iter()
                .map(|x| {
                    x.as_str().map(str::to_string).ok_or_else(|| {
                        Error::format("adapter_config.json", format!("{field}: expected strings"))
                    })
                })
                .collect::<Result<_>>()?,
        )),
        _ => {
            return Err(Error::format(
                "adapter_config.json",
                format!("{field}: expected a string, a list or null"),
            ))
        }
    })
}

fn strings(v: &Value, field: &str) -> Result<Vec<String>> {
    match selector(v, field)? {
        None => Ok(Vec::new()),
        Some(ModuleSelector::Regex(s)) => Ok(vec![s]),
        Some(ModuleSelector::List(l)) => Ok(l),
    }
}

impl PeftConfig {
    /// Parses `adapter_config.json` text, refusing unknown fields.
    ///
    /// # Errors
    /// As [`PeftConfig::from_json_with`].
    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_json_with(text, &PeftOptions::default())
    }

    /// Parses `adapter_config.json` text. Every field is looked up in [`config_field_policy`].
    ///
    /// # Errors
    /// [`Error::Format`] for invalid JSON, a missing `r` / `lora_alpha` or a field of the
    /// wrong type; [`Error::Model`] for a non-LoRA `peft_type`, a refused field that is set
    /// (named, with the reason), an unknown field (unless `opts.allow_unknown`), `r == 0`,
    /// a non-finite alpha, or a pattern key that is not a usable regular expression.
    pub fn from_json_with(text: &str, opts: &PeftOptions) -> Result<Self> {
        let what = "adapter_config.json";
        let map: serde_json::Map<String, Value> =
            serde_json::from_str(text).map_err(|e| Error::format(what, e.to_string()))?;
        let ordered: OrderedPatterns =
            serde_json::from_str(text).map_err(|e| Error::format(what, e.to_string()))?;
        let mut unknown = Vec::new();
        for (k, v) in &map {
            match config_field_policy(k) {
                Some(FieldPolicy::RefusedIfSet(reason)) if is_set(v) => {
                    return Err(Error::model(format!(
                        "{what}: field '{k}' = {v} is not supported: {reason}"
                    )))
                }
                Some(_) => {}
                None if opts.allow_unknown => unknown.push(k.clone()),
                None => {
                    return Err(Error::model(format!(
                    "{what}: unknown field '{k}' (not a LoRA field of PEFT 0.21); it might change \
                         the adapter's output, so the checkpoint is refused (--allow-unknown / \
                         PeftOptions::allow_unknown ignores it)"
                )))
                }
            }
        }
        let get = |k: &str| map.get(k).unwrap_or(&Value::Null);
        let flag = |k: &str| -> Result<bool> {
            match get(k) {
                Value::Null => Ok(false),
                Value::Bool(b) => Ok(*b),
                v => Err(Error::format(
                    what,
                    format!("{k}: expected true or false, found {v}"),
                )),
            }
        };
        if let Some(t) = get("peft_type").as_str() {
            if !t.eq_ignore_ascii_case("lora") {
                return Err(Error::model(format!(
                    "{what}: peft_type is {t}, only LORA is supported"
                )));
            }
        }
        match get("init_lora_weights") {
            Value::Null | Value::Bool(_) => {}
            Value::String(s) if HARMLESS_INITS.contains(&s.to_ascii_lowercase().as_str()) => {}
            v => {
                return Err(Error::model(format!(
                    "{what}: field 'init_lora_weights' = {v} is not supported: this initialisation \
                     changes the base weights PEFT applies the adapter to (convert the adapter to \
                     a plain LoRA first, e.g. with save_pretrained(path_initial_model_for_weight_conversion=...))"
                )))
            }
        }
        let r = get("r")
            .as_u64()
            .ok_or_else(|| Error::format(what, "missing or invalid field 'r'"))?;
        let lora_alpha = get("lora_alpha")
            .as_f64()
            .ok_or_else(|| Error::format(what, "missing or invalid field 'lora_alpha'"))?;
        let rank_pattern = ordered
            .rank_pattern
            .into_iter()
            .map(|(k, v)| match v.as_u64() {
                Some(r) if r > 0 => Ok((k, r as usize)),
                _ => Err(Error::model(format!(
                    "{what}: rank_pattern['{k}'] = {v} is not a positive rank"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        let alpha_pattern = ordered
            .alpha_pattern
            .into_iter()
            .map(|(k, v)| match v.as_f64() {
                Some(a) if a.is_finite() => Ok((k, a)),
                _ => Err(Error::model(format!(
                    "{what}: alpha_pattern['{k}'] = {v} is not a finite alpha"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        for (k, _) in &rank_pattern {
            python_regex_for(&format!(r"(.*\.)?({k})$"), false, "rank_pattern", k)?;
        }
        for (k, _) in &alpha_pattern {
            python_regex_for(&format!(r"(.*\.)?({k})$"), false, "alpha_pattern", k)?;
        }
        let bias = match get("bias") {
            Value::Null => BiasMode::None,
            Value::String(s) if s == "none" => BiasMode::None,
            Value::String(s) if s == "all" => BiasMode::All,
            Value::String(s) if s == "lora_only" => BiasMode::LoraOnly,
            v => {
                return Err(Error::model(format!(
                    "{what}: bias = {v}; PEFT writes \"none\", \"all\" or \"lora_only\""
                )))
            }
        };
        let layers_to_transform = match get("layers_to_transform") {
            Value::Null => None,
            Value::Number(n) => Some(vec![n
                .as_i64()
                .ok_or_else(|| Error::format(what, "layers_to_transform: expected integers"))?]),
            Value::Array(a) if a.is_empty() => None,
            Value::Array(a) => Some(
                a.iter()
                    .map(|x| {
                        x.as_i64().ok_or_else(|| {
                            Error::format(what, "layers_to_transform: expected integers")
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
            v => {
                return Err(Error::format(
                    what,
                    format!("layers_to_transform: expected an integer or a list, found {v}"),
                ))
            }
        };
        let cfg = PeftConfig {
            peft_type: get("peft_type").as_str().map(str::to_string),
            r: usize::try_from(r).unwrap_or(usize::MAX),
            lora_alpha,
            use_rslora: flag("use_rslora")?,
            use_dora: flag("use_dora")?,
            kasa: is_set(get("kasa_config")),
            rank_pattern,
            alpha_pattern,
            bias,
            modules_to_save: strings(get("modules_to_save"), "modules_to_save")?,
            fan_in_fan_out: flag("fan_in_fan_out")?,
            lora_bias: flag("lora_bias")?,
            target_modules: selector(get("target_modules"), "target_modules")?,
            exclude_modules: selector(get("exclude_modules"), "exclude_modules")?,
            layers_to_transform,
            layers_pattern: strings(get("layers_pattern"), "layers_pattern")?,
            unknown_fields: unknown,
        };
        if cfg.r == 0 {
            return Err(Error::model(format!("{what}: r = 0")));
        }
        if !cfg.lora_alpha.is_finite() {
            return Err(Error::model(format!("{what}: non-finite lora_alpha")));
        }
        if cfg.use_dora && cfg.kasa {
            return Err(Error::model(format!(
                "{what}: use_dora and kasa_config are both set; PEFT has no such variant"
            )));
        }
        if cfg.use_dora && cfg.lora_bias {
            return Err(Error::model(format!(
                "{what}: use_dora with lora_bias is refused by PEFT itself"
            )));
        }
        if cfg.kasa && cfg.fan_in_fan_out {
            return Err(Error::model(format!(
                "{what}: KaSA with fan_in_fan_out is refused by PEFT itself"
            )));
        }
        if let Some(ModuleSelector::Regex(p)) = &cfg.target_modules {
            python_regex(p, true, "target_modules")?;
        }
        if let Some(ModuleSelector::Regex(p)) = &cfg.exclude_modules {
            python_regex(p, true, "exclude_modules")?;
        }
        Ok(cfg)
    }

    /// Reads `adapter_config.json` (at most [`MAX_CONFIG_BYTES`]), refusing unknown fields.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Format`] on read failure, else as [`PeftConfig::from_json`].
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_path_with(path, &PeftOptions::default())
    }

    /// [`PeftConfig::from_path`] with options.
    ///
    /// # Errors
    /// As [`PeftConfig::from_path`] and [`PeftConfig::from_json_with`].
    pub fn from_path_with(path: impl AsRef<Path>, opts: &PeftOptions) -> Result<Self> {
        let path = path.as_ref();
        Self::from_json_with(
            &read_text_limited(path, MAX_CONFIG_BYTES, "adapter_config.json")?,
            opts,
        )
    }

    /// The rank and alpha PEFT gives `module`, with a description of where they came from.
    ///
    /// # Errors
    /// [`Error::Model`] if a pattern key is not a usable regular expression.
    pub fn rank_alpha(&self, module: &str) -> Result<(usize, f64, String)> {
        let r = pattern_lookup(&self.rank_pattern, module, "rank_pattern")?;
        let a = pattern_lookup(&self.alpha_pattern, module, "alpha_pattern")?;
        let why = format!(
            "r = {} ({}), alpha = {} ({})",
            r.map_or(self.r, |(_, v)| *v),
            r.map_or_else(
                || "config r, no rank_pattern key matches".to_string(),
                |(k, _)| format!("rank_pattern key '{k}'")
            ),
            a.map_or(self.lora_alpha, |(_, v)| *v),
            a.map_or_else(
                || "config lora_alpha, no alpha_pattern key matches".to_string(),
                |(k, _)| format!("alpha_pattern key '{k}'")
            ),
        );
        Ok((
            r.map_or(self.r, |(_, v)| *v),
            a.map_or(self.lora_alpha, |(_, v)| *v),
            why,
        ))
    }

    /// The LoRA scale of `module` whose tensors have rank `rank`: `alpha / r`, or
    /// `alpha / sqrt(r)` with rsLoRA, where `r` and `alpha` honour `rank_pattern` and
    /// `alpha_pattern` as PEFT matches them (regular expressions, first key in file order).
    ///
    /// # Errors
    /// [`Error::Model`] if `rank` disagrees with the rank PEFT gives the module (the message
    /// says which key, if any, matched).
    pub fn scale_for(&self, module: &str, rank: usize) -> Result<f64> {
        let (r, alpha, why) = self.rank_alpha(module)?;
        if r != rank {
            return Err(Error::model(format!(
                "PEFT module '{module}': lora_A / lora_B have rank {rank}, but adapter_config.json gives this module {why}"
            )));
        }
        let r = r as f64;
        Ok(if self.use_rslora {
            alpha / r.sqrt()
        } else {
            alpha / r
        })
    }

    /// Whether PEFT's `check_target_module_exists` adapts `module` under this config
    /// (`target_modules`, `exclude_modules`, `modules_to_save`, `layers_to_transform`,
    /// `layers_pattern`). `None` when the config has no `target_modules` (nothing to check).
    ///
    /// # Errors
    /// [`Error::Model`] for a pattern that is not a usable regular expression.
    pub fn targets(&self, module: &str) -> Result<Option<bool>> {
        if let Some(ex) = &self.exclude_modules {
            let excluded = match ex {
                ModuleSelector::Regex(p) => {
                    python_regex(p, true, "exclude_modules")?.is_match(module)
                }
                ModuleSelector::List(l) => l
                    .iter()
                    .any(|k| module == k || module.ends_with(&format!(".{k}"))),
            };
            if excluded {
                return Ok(Some(false));
            }
        }
        for m in &self.modules_to_save {
            if python_regex_for(
                &format!(r"(^|.*\.){m}($|\..*)"),
                false,
                "modules_to_save",
                m,
            )?
            .is_match(module)
            {
                return Ok(Some(false));
            }
        }
        let Some(t) = &self.target_modules else {
            return Ok(None);
        };
        Ok(Some(match t {
            ModuleSelector::Regex(p) => python_regex(p, true, "target_modules")?.is_match(module),
            ModuleSelector::List(l) if l.iter().any(|k| k == module) => true,
            ModuleSelector::List(l) => {
                let found = l.iter().any(|k| module.ends_with(&format!(".{k}")));
                match (&self.layers_to_transform, found) {
                    (Some(idx), true) => {
                        let caps = if self.layers_pattern.is_empty() {
                            regex::Regex::new(r"^.*?\.[^.]*\.(?P<idx>\d+)\.")
                                .ok()
                                .and_then(|re| {
                                    re.captures(module)?
                                        .name("idx")
                                        .map(|m| m.as_str().to_string())
                                })
                        } else {
                            let mut hit = None;
                            for p in &self.layers_pattern {
                                let re = python_regex_for(
                                    &format!(r"(?:^|.*?\.){p}\.(?P<idx>\d+)\."),
                                    false,
                                    "layers_pattern",
                                    p,
                                )?;
                                if let Some(c) = re.captures(module) {
                                    hit = c.name("idx").map(|m| m.as_str().to_string());
                                    break;
                                }
                            }
                            hit
                        };
                        caps.and_then(|s| s.parse::<i64>().ok())
                            .is_some_and(|i| idx.contains(&i))
                    }
                    _ => found,
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_keys_match_as_peft() {
        let p = vec![
            ("^dense$".to_string(), 1usize),
            ("classif.*".into(), 2),
            ("q".into(), 3),
        ];
        let f = |m: &str| pattern_lookup(&p, m, "t").unwrap().map(|(_, v)| *v);
        assert_eq!(f("dense"), Some(1));
        assert_eq!(f("model.dense"), None); // '^' anchors at the start of the whole name
        assert_eq!(f("head.classifier"), Some(2));
        assert_eq!(f("layer.0.q"), Some(3));
        assert_eq!(f("layer.0.qq"), None);
        assert!(python_regex("(?<=a)b", true, "rank_pattern").is_err());
    }

    #[test]
    fn targets_follow_peft() {
        let cfg = |extra: &str| {
            PeftConfig::from_json(&format!(r#"{{"r": 2, "lora_alpha": 4{extra}}}"#)).unwrap()
        };
        let c = cfg(r#", "target_modules": ["query"], "layers_to_transform": [1]"#);
        assert_eq!(
            c.targets("encoder.layer.1.attention.query").unwrap(),
            Some(true)
        );
        assert_eq!(
            c.targets("encoder.layer.0.attention.query").unwrap(),
            Some(false)
        );
        assert_eq!(c.targets("query").unwrap(), Some(true)); // named exactly: no layer check
        let c = cfg(
            r#", "target_modules": ["query"], "layers_to_transform": 0, "layers_pattern": "blocks""#,
        );
        assert_eq!(c.targets("m.blocks.0.query").unwrap(), Some(true));
        assert_eq!(c.targets("m.layer.0.query").unwrap(), Some(false));
        let c = cfg(r#", "target_modules": ".*\\.(q|v)", "exclude_modules": ["enc.v"]"#);
        assert_eq!(c.targets("enc.q").unwrap(), Some(true));
        assert_eq!(c.targets("enc.v").unwrap(), Some(false));
        assert_eq!(c.targets("q").unwrap(), Some(false)); // fullmatch needs the dot
        assert_eq!(cfg("").targets("anything").unwrap(), None);
        let c = cfg(r#", "target_modules": ["dense"], "modules_to_save": ["head"]"#);
        assert_eq!(c.targets("head.dense").unwrap(), Some(false));
        // Refused and unknown fields name themselves.
        let e = PeftConfig::from_json(r#"{"r": 2, "lora_alpha": 4, "use_qalora": true}"#);
        assert!(matches!(e, Err(Error::Model { reason }) if reason.contains("'use_qalora'")));
        let e = PeftConfig::from_json(r#"{"r": 2, "lora_alpha": 4, "init_lora_weights": "pissa"}"#);
        assert!(matches!(e, Err(Error::Model { reason }) if reason.contains("init_lora_weights")));
        let ok = PeftConfig::from_json(
            r#"{"r": 2, "lora_alpha": 4, "use_qalora": false, "loftq_config": {}}"#,
        );
        assert!(ok.is_ok());
    }
}
