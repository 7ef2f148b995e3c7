//! The operation catalog: what a team declares once and every frontend runs.
//!
//! Specs deserialize straight from the `[[ops]]` tables of `youops.toml`
//! (`deny_unknown_fields` everywhere); [`Catalog::new`] then checks what serde
//! cannot (duplicate names, placeholders that name no param, ...).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::grammar;
use crate::model::Value;
use crate::units::{parse_duration, ByteSize, HumanDuration};

/// The type of an op parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// Any text (optionally constrained by `pattern`).
    String,
    /// A signed 64-bit integer (optionally `min`/`max`).
    Int,
    /// `true`/`false` (also yes/no, on/off, 1/0).
    Bool,
    /// One of `values`.
    Enum,
    /// An e-mail address.
    Email,
    /// A human duration (`30s`, `1h30m`).
    Duration,
    /// A secret: never stored, logged, or shown; scrubbed from output.
    Secret,
}

impl ParamType {
    /// The name used in config and help.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Bool => "bool",
            ParamType::Enum => "enum",
            ParamType::Email => "email",
            ParamType::Duration => "duration",
            ParamType::Secret => "secret",
        }
    }
}

/// A compiled regular expression that must match the whole value.
#[derive(Clone)]
pub struct Pattern {
    /// The source text, as written in config.
    pub source: String,
    regex: Regex,
}

impl Pattern {
    /// Compile `source`, anchored at both ends.
    pub fn new(source: &str) -> Result<Self, String> {
        let regex = Regex::new(&format!("^(?:{source})$"))
            .map_err(|e| format!("invalid pattern `{source}`: {e}"))?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    /// Whether the whole of `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A typed parameter of an op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ParamSpec {
    /// Name used in commands (`env=prod`).
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// One line shown in help and issue forms.
    #[serde(default)]
    pub description: String,
    /// Required unless a default is given. Defaults to `true` without a default.
    #[serde(default)]
    pub required: Option<bool>,
    /// Default value (text, number or bool).
    #[serde(default)]
    pub default: Option<toml::Value>,
    /// Whole-value regular expression (string, email, secret).
    #[serde(default)]
    pub pattern: Option<Pattern>,
    /// Allowed values (enum).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Smallest allowed value (int).
    #[serde(default)]
    pub min: Option<i64>,
    /// Largest allowed value (int).
    #[serde(default)]
    pub max: Option<i64>,
}

impl ParamSpec {
    /// Whether the param must be given.
    pub fn is_required(&self) -> bool {
        self.required.unwrap_or(self.default.is_none())
    }

    /// Whether the value is secret.
    pub fn is_secret(&self) -> bool {
        self.ty == ParamType::Secret
    }

    /// Parse and check one raw value.
    pub fn parse_value(&self, raw: &str) -> Result<Value, String> {
        // NUL cannot reach a process's argv, and other control characters
        // (escape sequences, ...) have no place in an argument either; the
        // command grammar refuses them too. The value itself is not echoed: it
        // may be a secret.
        if let Some((i, c)) = raw
            .chars()
            .enumerate()
            .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            return Err(format!(
                "control character U+{:04X} is not allowed (character {} of the value)",
                u32::from(c),
                i + 1
            ));
        }
        match self.ty {
            ParamType::String | ParamType::Secret => {
                self.check_pattern(raw)?;
                Ok(Value::Str(raw.to_string()))
            }
            ParamType::Email => {
                if !is_email(raw) {
                    return Err(format!("`{raw}` is not an e-mail address"));
                }
                self.check_pattern(raw)?;
                Ok(Value::Str(raw.to_string()))
            }
            ParamType::Int => {
                let n: i64 = raw
                    .trim()
                    .parse()
                    .map_err(|_| format!("expected an integer, got `{raw}`"))?;
                if let Some(min) = self.min {
                    if n < min {
                        return Err(format!("{n} is below the minimum {min}"));
                    }
                }
                if let Some(max) = self.max {
                    if n > max {
                        return Err(format!("{n} is above the maximum {max}"));
                    }
                }
                Ok(Value::Int(n))
            }
            ParamType::Bool => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(Value::Bool(true)),
                "false" | "no" | "off" | "0" => Ok(Value::Bool(false)),
                _ => Err(format!("expected true or false, got `{raw}`")),
            },
            ParamType::Enum => {
                if self.values.iter().any(|v| v == raw) {
                    Ok(Value::Str(raw.to_string()))
                } else {
                    let hint = grammar::suggest(raw, self.values.iter().map(String::as_str))
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    Err(format!(
                        "`{raw}` is not one of {}{hint}",
                        self.values
                            .iter()
                            .map(|v| format!("`{v}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
            ParamType::Duration => {
                parse_duration(raw)?;
                Ok(Value::Str(raw.trim().to_string()))
            }
        }
    }

    fn check_pattern(&self, raw: &str) -> Result<(), String> {
        match &self.pattern {
            Some(p) if !p.is_match(raw) => {
                if self.is_secret() {
                    Err(format!("value does not match the pattern `{}`", p.source))
                } else {
                    Err(format!("`{raw}` does not match the pattern `{}`", p.source))
                }
            }
            _ => Ok(()),
        }
    }

    /// The default as a typed value, if any.
    pub fn default_value(&self) -> Result<Option<Value>, String> {
        let Some(d) = &self.default else {
            return Ok(None);
        };
        let text = match d {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(format!(
                    "default must be a string, integer or bool, not {}",
                    other.type_str()
                ))
            }
        };
        self.parse_value(&text).map(Some)
    }

    /// A short type description for help (`enum: a|b`, `int 1..10`, ...).
    pub fn type_hint(&self) -> String {
        match self.ty {
            ParamType::Enum => self.values.join("|"),
            ParamType::Int => match (self.min, self.max) {
                (Some(a), Some(b)) => format!("int {a}..{b}"),
                (Some(a), None) => format!("int ≥{a}"),
                (None, Some(b)) => format!("int ≤{b}"),
                (None, None) => "int".into(),
            },
            t => t.as_str().into(),
        }
    }
}

fn is_email(s: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
            .expect("static regex")
    })
    .is_match(s)
        && s.len() <= 254
}

/// How an op runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum RunnerSpec {
    /// Run a program. Each `{param}` in an argv element is replaced inside that one
    /// element; no shell ever sees user input.
    Exec {
        /// Program and arguments (a template).
        argv: Vec<String>,
        /// Working directory (relative to the config file); default: the config's directory.
        #[serde(default)]
        cwd: Option<PathBuf>,
        /// Extra environment variables (templates allowed).
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Pass the daemon's whole environment through (default: only PATH, HOME,
        /// LANG, TZ, so the daemon's own secrets do not reach scripts).
        #[serde(default)]
        inherit_env: bool,
    },
    /// Make an HTTP request with a JSON body.
    Http {
        /// URL template; placeholders are percent-encoded.
        url: String,
        /// Method (default POST).
        #[serde(default = "default_method")]
        method: String,
        /// Extra headers (templates allowed; use `${ENV}` for tokens).
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// JSON body template. A string that is exactly `"{param}"` becomes the
        /// typed value; other strings are interpolated. Default: all args as an object.
        #[serde(default)]
        body: Option<toml::Value>,
        /// Statuses that count as success (default: any 2xx).
        #[serde(default)]
        expect_status: Vec<u16>,
    },
    /// Call a Rust function an embedder registered under `name`.
    Builtin {
        /// Registered name.
        name: String,
    },
}

fn default_method() -> String {
    "POST".into()
}

impl RunnerSpec {
    /// `exec`, `http` or `builtin`.
    pub fn kind(&self) -> &'static str {
        match self {
            RunnerSpec::Exec { .. } => "exec",
            RunnerSpec::Http { .. } => "http",
            RunnerSpec::Builtin { .. } => "builtin",
        }
    }
}

/// What happens when a run finds its lock key held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    /// Wait for the holder to finish (the default).
    #[default]
    Queue,
    /// Fail at once, naming the holder.
    Refuse,
}

/// One operation of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OpSpec {
    /// Name (`user.create`).
    pub name: String,
    /// One line shown in help.
    #[serde(default)]
    pub description: String,
    /// Parameters, in the order help and forms show them.
    #[serde(default)]
    pub params: Vec<ParamSpec>,
    /// How it runs.
    pub runner: RunnerSpec,
    /// Run timeout (default: `[executor] default_timeout`).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Roles that may run it, on every frontend (a shorthand for a grant).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Approvals needed before it runs.
    #[serde(default)]
    pub approvals: u32,
    /// Roles whose members may approve (default: any principal allowed to run it).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// How long approvals may take (default: `[executor] approval_ttl`).
    #[serde(default)]
    pub approval_ttl: Option<HumanDuration>,
    /// Lock key template (`deploy:{env}`): two runs with the same key never overlap.
    #[serde(default)]
    pub lock: Option<String>,
    /// Queue or refuse when the lock is held.
    #[serde(default)]
    pub lock_mode: LockMode,
    /// Output cap for this op (default: `[executor] output_limit`).
    #[serde(default)]
    pub output_limit: Option<ByteSize>,
    /// Frontend-specific options for this op (`[ops.frontend.github] close_on_success = true`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub frontend: BTreeMap<String, toml::Table>,
}

impl OpSpec {
    /// The param called `name`.
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Validate raw arguments: every problem at once.
    pub fn validate_args(
        &self,
        raw: &[(String, String)],
    ) -> Result<BTreeMap<String, Value>, Vec<String>> {
        let mut errors = Vec::new();
        let mut out = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for (name, value) in raw {
            if !seen.insert(name.as_str()) {
                errors.push(format!("`{name}` given twice"));
                continue;
            }
            match self.param(name) {
                None => {
                    let hint = grammar::suggest(name, self.params.iter().map(|p| p.name.as_str()))
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    let known = if self.params.is_empty() {
                        format!("`{}` takes no parameters", self.name)
                    } else {
                        format!(
                            "parameters are {}",
                            self.params
                                .iter()
                                .map(|p| p.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    errors.push(format!("unknown parameter `{name}`{hint}; {known}"));
                }
                Some(spec) => match spec.parse_value(value) {
                    Ok(v) => {
                        out.insert(name.clone(), v);
                    }
                    Err(e) => errors.push(format!("`{name}`: {e}")),
                },
            }
        }
        for spec in &self.params {
            if out.contains_key(&spec.name) || seen.contains(spec.name.as_str()) {
                continue;
            }
            match spec.default_value() {
                Ok(Some(v)) => {
                    out.insert(spec.name.clone(), v);
                }
                Ok(None) if spec.is_required() => errors.push(format!(
                    "missing parameter `{}` ({}){}",
                    spec.name,
                    spec.type_hint(),
                    if spec.description.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", spec.description)
                    }
                )),
                Ok(None) => {}
                Err(e) => errors.push(format!("`{}`: bad default: {e}", spec.name)),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// A usage line: `deploy service=<api|web> version=<string> [dry=<bool>]`.
    pub fn usage(&self) -> String {
        let mut s = self.name.clone();
        for p in &self.params {
            let part = format!("{}=<{}>", p.name, p.type_hint());
            if p.is_required() {
                s.push(' ');
                s.push_str(&part);
            } else {
                s.push_str(&format!(" [{part}]"));
            }
        }
        s
    }

    /// Names of the secret params.
    pub fn secret_params(&self) -> Vec<String> {
        self.params
            .iter()
            .filter(|p| p.is_secret())
            .map(|p| p.name.clone())
            .collect()
    }

    /// Problems serde cannot see (placeholders, defaults, names).
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !grammar::is_valid_op_name(&self.name) {
            errors.push(format!(
                "bad op name `{}`: use lower-case letters, digits, `.`, `_`, `-`, starting with a letter",
                self.name
            ));
        }
        self.check_params(&mut errors);
        let mut templates = self.check_runner(&mut errors);
        if let Some(lock) = &self.lock {
            templates.push(lock);
            for ph in placeholders(lock) {
                if self.param(ph).is_some_and(|p| p.is_secret()) {
                    errors.push(format!(
                        "lock `{lock}` uses the secret `{{{ph}}}`: lock keys are recorded and shown, secrets never are"
                    ));
                }
            }
        }
        for t in templates {
            for ph in placeholders(t) {
                if self.param(ph).is_none() {
                    errors.push(format!(
                        "placeholder `{{{ph}}}` in `{t}` names no parameter"
                    ));
                }
            }
        }
        if self.approvals > 16 {
            errors.push("approvals: at most 16".into());
        }
        if self.timeout.is_some_and(|t| t.0.is_zero()) {
            errors.push("timeout must be more than 0".into());
        }
        errors
    }

    /// Problems of the params: names, enum values, defaults.
    fn check_params(&self, errors: &mut Vec<String>) {
        let mut names = BTreeSet::new();
        for p in &self.params {
            if !grammar::is_valid_param_name(&p.name) {
                errors.push(format!("bad parameter name `{}`", p.name));
            }
            if !names.insert(p.name.as_str()) {
                errors.push(format!("parameter `{}` declared twice", p.name));
            }
            if p.ty == ParamType::Enum && p.values.is_empty() {
                errors.push(format!("parameter `{}`: an enum needs `values`", p.name));
            }
            if p.ty != ParamType::Enum && !p.values.is_empty() {
                errors.push(format!(
                    "parameter `{}`: `values` is only for enums",
                    p.name
                ));
            }
            if p.is_secret() && p.default.is_some() {
                errors.push(format!(
                    "parameter `{}`: a secret cannot have a default in the catalog",
                    p.name
                ));
            } else if let Err(e) = p.default_value() {
                errors.push(format!("parameter `{}`: bad default: {e}", p.name));
            }
        }
    }

    /// Problems of the runner; returns its templates (argv, env, url, headers).
    fn check_runner<'a>(&'a self, errors: &mut Vec<String>) -> Vec<&'a str> {
        let mut templates: Vec<&str> = Vec::new();
        match &self.runner {
            RunnerSpec::Exec { argv, env, .. } => {
                if argv.is_empty() || argv[0].is_empty() {
                    errors.push("runner: `argv` needs at least the program".into());
                } else if argv[0].contains(OPEN) {
                    errors.push("runner: the program (argv[0]) cannot be a placeholder".into());
                }
                templates.extend(argv.iter().map(String::as_str));
                templates.extend(env.values().map(String::as_str));
            }
            RunnerSpec::Http {
                url,
                headers,
                method,
                expect_status,
                ..
            } => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    errors.push(format!(
                        "runner: url `{url}` must start with http:// or https://"
                    ));
                }
                if !matches!(
                    method.to_ascii_uppercase().as_str(),
                    "GET" | "POST" | "PUT" | "PATCH" | "DELETE"
                ) {
                    errors.push(format!("runner: unsupported method `{method}`"));
                }
                if expect_status.iter().any(|s| !(100..=599).contains(s)) {
                    errors.push("runner: expect_status values must be HTTP statuses".into());
                }
                templates.push(url);
                templates.extend(headers.values().map(String::as_str));
            }
            RunnerSpec::Builtin { name } => {
                if name.is_empty() {
                    errors.push("runner: builtin needs a `name`".into());
                }
            }
        }
        templates
    }
}

/// A template's placeholder braces, named so that no lone brace sits in a
/// literal (brace matching in editors and line-counting tools trips on those).
const OPEN: char = '{';
const OPEN_BYTE: u8 = OPEN as u8;
const CLOSE: char = '}';

/// The `{name}` placeholders in a template. `{{` and `}}` are literal braces.
pub fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = template.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            OPEN_BYTE if bytes.get(i + 1) == Some(&OPEN_BYTE) => i += 2,
            OPEN_BYTE => {
                if let Some(end) = template[i + 1..].find(CLOSE) {
                    out.push(&template[i + 1..i + 1 + end]);
                    i += end + 2;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Fill `{name}` placeholders from `lookup`. Unknown names are left as written.
pub fn render_template(template: &str, mut lookup: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if let Some(body) = tail.strip_prefix('{') {
            match body.find('}') {
                Some(end) => {
                    let name = &body[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => out.push_str(&tail[..end + 2]),
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str(tail);
                    rest = "";
                }
            }
        } else {
            out.push('}');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The validated set of ops.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    ops: BTreeMap<String, OpSpec>,
}

impl Catalog {
    /// Build a catalog, checking every op. Returns every problem found, each
    /// prefixed with the op it belongs to.
    pub fn new(ops: Vec<OpSpec>) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut map = BTreeMap::new();
        for op in ops {
            for e in op.check() {
                errors.push(format!("op `{}`: {e}", op.name));
            }
            if ["help", "approve", "deny", "cancel", "status", "retry"].contains(&op.name.as_str())
            {
                errors.push(format!(
                    "op `{}`: the name is a reserved command word",
                    op.name
                ));
            }
            if map.contains_key(&op.name) {
                errors.push(format!("op `{}` declared twice", op.name));
            } else {
                map.insert(op.name.clone(), op);
            }
        }
        if errors.is_empty() {
            Ok(Catalog { ops: map })
        } else {
            Err(errors)
        }
    }

    /// The op called `name`.
    pub fn get(&self, name: &str) -> Option<&OpSpec> {
        self.ops.get(name)
    }

    /// All ops, by name.
    pub fn iter(&self) -> impl Iterator<Item = &OpSpec> {
        self.ops.values()
    }

    /// One problem for each op whose `builtin` runner names no builtin in
    /// `registered` (builtins are registered by the embedder, so only its
    /// registry can tell; `youops config check` asks the daemon's).
    pub fn unknown_builtins(&self, registered: &[&str]) -> Vec<String> {
        let mut sorted: Vec<&str> = registered.to_vec();
        sorted.sort_unstable();
        self.ops
            .values()
            .filter_map(|op| match &op.runner {
                RunnerSpec::Builtin { name } if !sorted.contains(&name.as_str()) => Some(format!(
                    "ops `{}`: runner: no builtin named `{name}` (this program has: {})",
                    op.name,
                    if sorted.is_empty() {
                        "none".to_string()
                    } else {
                        sorted.join(", ")
                    }
                )),
                _ => None,
            })
            .collect()
    }

    /// Number of ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are no ops.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// "did you mean" for an unknown op name.
    pub fn suggest(&self, name: &str) -> Option<&str> {
        grammar::suggest(name, self.ops.keys().map(String::as_str))
    }
}

#[cfg(test)]
mod tests;
