//! Runners: how an op's work is done — `exec` (a program, never a shell), `http`
//! (a JSON request) and `builtin` (a Rust function an embedder registers).
//!
//! Output is captured with a cap (head and tail kept, the cut marked) and every
//! secret argument value is scrubbed from it before anyone sees it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use crate::catalog::{render_template, OpSpec, RunnerSpec};
use crate::model::{RequestId, RunOutcome, Value, REDACTED};

/// What a builtin gets.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuiltinCall {
    /// The request.
    pub request_id: RequestId,
    /// The op name.
    pub op: String,
    /// Typed arguments, secrets included (never log them).
    pub args: BTreeMap<String, Value>,
    /// The principal who asked.
    pub principal: Option<String>,
    /// Cancelled when the request is cancelled or times out.
    pub cancel: CancellationToken,
}

/// A Rust function registered as a runner. Return `Ok(output)` for success,
/// `Err(message)` for a failed run.
#[async_trait]
pub trait Builtin: Send + Sync + 'static {
    /// Do the work.
    async fn call(&self, call: BuiltinCall) -> Result<String, String>;
}

#[async_trait]
impl<F, Fut> Builtin for F
where
    F: Fn(BuiltinCall) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    async fn call(&self, call: BuiltinCall) -> Result<String, String> {
        (self)(call).await
    }
}

/// Builtins by name.
#[derive(Clone, Default)]
pub struct Builtins {
    map: HashMap<String, Arc<dyn Builtin>>,
}

impl fmt::Debug for Builtins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.map.keys()).finish()
    }
}

impl Builtins {
    /// Register `f` as `name`.
    pub fn register(&mut self, name: impl Into<String>, f: impl Builtin) {
        self.map.insert(name.into(), Arc::new(f));
    }

    /// The builtin called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Builtin>> {
        self.map.get(name).cloned()
    }

    /// Registered names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub(crate) struct RunContext {
    pub request_id: RequestId,
    pub op: Arc<OpSpec>,
    pub args: BTreeMap<String, Value>,
    pub principal: Option<String>,
    pub timeout: Duration,
    pub output_limit: usize,
    pub base_dir: PathBuf,
    pub cancel: CancellationToken,
}

/// How a run ended, before it becomes a state.
#[derive(Debug)]
pub(crate) enum RunEnd {
    Succeeded(RunOutcome),
    Failed(RunOutcome),
    TimedOut(RunOutcome),
    Cancelled(RunOutcome),
}

impl RunContext {
    fn secrets(&self) -> Vec<String> {
        self.op
            .params
            .iter()
            .filter(|p| p.is_secret())
            .filter_map(|p| self.args.get(&p.name).map(Value::as_text))
            .filter(|s| !s.is_empty())
            .collect()
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.args.get(name).map(Value::as_text)
    }

    fn lookup_masked(&self, name: &str) -> Option<String> {
        let secret = self.op.param(name).is_some_and(|p| p.is_secret());
        self.args.get(name).map(|v| {
            if secret {
                REDACTED.to_string()
            } else {
                v.as_text()
            }
        })
    }
}

/// Replace every secret value in `text` by [`REDACTED`].
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    // Longest first so a secret containing another is scrubbed whole.
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in sorted {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    out
}

/// Collects output up to a cap: keeps the first and last halves, counts the rest.
#[derive(Debug)]
pub struct OutputBuffer {
    limit: usize,
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    total: u64,
}

impl OutputBuffer {
    /// A buffer keeping at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        OutputBuffer {
            limit,
            head: Vec::new(),
            tail: std::collections::VecDeque::new(),
            total: 0,
        }
    }

    /// Add bytes.
    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let head_cap = self.limit / 2 + self.limit % 2;
        if self.head.len() < head_cap {
            let take = (head_cap - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        let tail_cap = self.limit / 2;
        if tail_cap == 0 {
            return;
        }
        if bytes.len() >= tail_cap {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - tail_cap..]);
        } else {
            let overflow = (self.tail.len() + bytes.len()).saturating_sub(tail_cap);
            self.tail.drain(..overflow);
            self.tail.extend(bytes);
        }
    }

    /// The kept text (lossy UTF-8, secrets scrubbed) and how many bytes were left out.
    pub fn finish(self, secrets: &[String]) -> (String, u64) {
        let kept = (self.head.len() + self.tail.len()) as u64;
        let omitted = self.total - kept;
        let mut head_bytes = self.head;
        let mut tail_bytes: Vec<u8> = self.tail.into_iter().collect();
        // A secret the cut splits in two would show its visible parts: mask
        // an end of the head that starts a secret and a start of the tail that
        // ends one.
        let (mut head_cut, mut tail_cut) = (false, false);
        if omitted > 0 {
            for s in secrets.iter().map(String::as_bytes) {
                if let Some(k) = (1..s.len()).rev().find(|&k| head_bytes.ends_with(&s[..k])) {
                    head_bytes.truncate(head_bytes.len() - k);
                    head_cut = true;
                }
                if let Some(k) = (1..s.len())
                    .rev()
                    .find(|&k| tail_bytes.starts_with(&s[s.len() - k..]))
                {
                    tail_bytes.drain(..k);
                    tail_cut = true;
                }
            }
        }
        let mut head = String::from_utf8_lossy(&head_bytes).into_owned();
        if head_cut {
            head.push_str(REDACTED);
        }
        let mut tail = String::from_utf8_lossy(&tail_bytes).into_owned();
        if tail_cut {
            tail.insert_str(0, REDACTED);
        }
        let text = if omitted == 0 {
            format!("{head}{tail}")
        } else {
            format!(
                "{head}\n[… {omitted} bytes of output omitted (limit {}) …]\n{tail}",
                self.limit
            )
        };
        (scrub(&text, secrets), omitted)
    }
}

/// A description of what would run, secrets masked (for dry runs and logs).
pub(crate) fn describe(ctx: &RunContext) -> String {
    match &ctx.op.runner {
        RunnerSpec::Exec { argv, .. } => {
            let rendered: Vec<String> = argv
                .iter()
                .map(|a| render_template(a, |n| ctx.lookup_masked(n)))
                .map(|a| shell_quote(&a))
                .collect();
            format!("exec: {}", rendered.join(" "))
        }
        RunnerSpec::Http { url, method, .. } => {
            format!(
                "http: {} {}",
                method.to_ascii_uppercase(),
                render_template(url, |n| ctx.lookup_masked(n).map(|v| percent_encode(&v)))
            )
        }
        RunnerSpec::Builtin { name } => format!("builtin: {name}"),
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Percent-encode everything but unreserved characters (RFC 3986).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YOUOPS_PARAM_<NAME>`: upper-cased, other characters as `_`.
pub fn param_env_name(name: &str) -> String {
    let mut s = String::from("YOUOPS_PARAM_");
    s.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    s
}

pub(crate) async fn run(ctx: &RunContext, builtins: &Builtins, http: &reqwest::Client) -> RunEnd {
    let started = Instant::now();
    let secrets = ctx.secrets();
    let end = match &ctx.op.runner {
        RunnerSpec::Exec {
            argv,
            cwd,
            env,
            inherit_env,
        } => run_exec(ctx, argv, cwd.as_deref(), env, *inherit_env, &secrets).await,
        RunnerSpec::Http {
            url,
            method,
            headers,
            body,
            expect_status,
        } => {
            run_http(
                ctx,
                http,
                url,
                method,
                headers,
                body.as_ref(),
                expect_status,
                &secrets,
            )
            .await
        }
        RunnerSpec::Builtin { name } => run_builtin(ctx, builtins, name, &secrets).await,
    };
    let ms = started.elapsed().as_millis() as u64;
    match end {
        RunEnd::Succeeded(mut o) => {
            o.duration_ms = ms;
            RunEnd::Succeeded(o)
        }
        RunEnd::Failed(mut o) => {
            o.duration_ms = ms;
            RunEnd::Failed(o)
        }
        RunEnd::TimedOut(mut o) => {
            o.duration_ms = ms;
            RunEnd::TimedOut(o)
        }
        RunEnd::Cancelled(mut o) => {
            o.duration_ms = ms;
            RunEnd::Cancelled(o)
        }
    }
}

async fn pump<R: AsyncRead + Unpin>(mut r: R, buf: Arc<std::sync::Mutex<OutputBuffer>>) {
    let mut chunk = vec![0u8; 8192];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Ok(mut b) = buf.lock() {
                    b.push(&chunk[..n]);
                }
            }
        }
    }
}

fn kill_group(pgid: i32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pgid), sig);
}

const KILL_GRACE: Duration = Duration::from_secs(2);

async fn run_exec(
    ctx: &RunContext,
    argv: &[String],
    cwd: Option<&Path>,
    env: &BTreeMap<String, String>,
    inherit_env: bool,
    secrets: &[String],
) -> RunEnd {
    let (mut cmd, program) = exec_command(ctx, argv, cwd, env, inherit_env);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return RunEnd::Failed(RunOutcome {
                error: Some(format!("cannot start `{}`: {e}", program.display())),
                ..Default::default()
            })
        }
    };
    let pgid = child.id().map(|p| p as i32);
    let captured = Captured::start(&mut child, ctx.output_limit);

    enum Why {
        Exited(std::io::Result<std::process::ExitStatus>),
        Timeout,
        Cancel,
    }
    let why = tokio::select! {
        status = child.wait() => Why::Exited(status),
        _ = tokio::time::sleep(ctx.timeout) => Why::Timeout,
        _ = ctx.cancel.cancelled() => Why::Cancel,
    };
    let status = match why {
        Why::Exited(s) => s.ok(),
        Why::Timeout | Why::Cancel => {
            let timed_out = matches!(why, Why::Timeout);
            return stop(ctx, &mut child, pgid, timed_out, captured, secrets).await;
        }
    };
    // The op's processes never outlive it: whatever it left in its group goes too,
    // which also closes pipes a background child might hold open.
    if let Some(pg) = pgid {
        kill_group(pg, Signal::SIGKILL);
    }
    let (output, omitted) = captured.finish(secrets).await;
    exit_end(status, output, omitted)
}

/// The command for an `exec` runner: argv and env rendered, the program and the
/// working directory resolved against the config's directory, and a process
/// group of its own.
fn exec_command(
    ctx: &RunContext,
    argv: &[String],
    cwd: Option<&Path>,
    env: &BTreeMap<String, String>,
    inherit_env: bool,
) -> (tokio::process::Command, PathBuf) {
    let rendered: Vec<String> = argv
        .iter()
        .map(|a| render_template(a, |n| ctx.lookup(n)))
        .collect();
    let mut program = PathBuf::from(&rendered[0]);
    if program.is_relative() && rendered[0].contains('/') {
        program = ctx.base_dir.join(program);
    }
    let workdir = match cwd {
        Some(c) if c.is_relative() => ctx.base_dir.join(c),
        Some(c) => c.to_path_buf(),
        None => ctx.base_dir.clone(),
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&rendered[1..])
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if !inherit_env {
        cmd.env_clear();
        for var in ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER"] {
            if let Ok(v) = std::env::var(var) {
                cmd.env(var, v);
            }
        }
    }
    for (name, value) in &ctx.args {
        cmd.env(param_env_name(name), value.as_text());
    }
    cmd.env("YOUOPS_REQUEST_ID", ctx.request_id.to_string());
    cmd.env("YOUOPS_OP", &ctx.op.name);
    if let Some(p) = &ctx.principal {
        cmd.env("YOUOPS_PRINCIPAL", p);
    }
    for (k, v) in env {
        cmd.env(k, render_template(v, |n| ctx.lookup(n)));
    }
    (cmd, program)
}

/// A child's stdout and stderr, pumped into one capped buffer.
struct Captured {
    out: Option<tokio::task::JoinHandle<()>>,
    err: Option<tokio::task::JoinHandle<()>>,
    buf: Arc<std::sync::Mutex<OutputBuffer>>,
}

impl Captured {
    fn start(child: &mut tokio::process::Child, limit: usize) -> Self {
        let buf = Arc::new(std::sync::Mutex::new(OutputBuffer::new(limit)));
        let out = child
            .stdout
            .take()
            .map(|s| tokio::spawn(pump(s, buf.clone())));
        let err = child
            .stderr
            .take()
            .map(|s| tokio::spawn(pump(s, buf.clone())));
        Captured { out, err, buf }
    }

    /// The output (scrubbed) and how many bytes of it were cut.
    async fn finish(self, secrets: &[String]) -> (String, u64) {
        collect(self.out, self.err).await;
        take(self.buf, secrets)
    }
}

/// Stop a run that timed out or was cancelled: SIGTERM to its group, SIGKILL
/// after a grace period, and whatever it wrote so far.
async fn stop(
    ctx: &RunContext,
    child: &mut tokio::process::Child,
    pgid: Option<i32>,
    timed_out: bool,
    captured: Captured,
    secrets: &[String],
) -> RunEnd {
    if let Some(pg) = pgid {
        kill_group(pg, Signal::SIGTERM);
    }
    let status = match tokio::time::timeout(KILL_GRACE, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            if let Some(pg) = pgid {
                kill_group(pg, Signal::SIGKILL);
            }
            child.wait().await.ok()
        }
    };
    if let Some(pg) = pgid {
        kill_group(pg, Signal::SIGKILL);
    }
    let (output, omitted) = captured.finish(secrets).await;
    let o = RunOutcome {
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
        output,
        output_truncated_bytes: omitted,
        error: Some(if timed_out {
            format!(
                "timed out after {}",
                crate::units::format_duration(ctx.timeout)
            )
        } else {
            "cancelled".into()
        }),
        ..Default::default()
    };
    if timed_out {
        RunEnd::TimedOut(o)
    } else {
        RunEnd::Cancelled(o)
    }
}

/// How a run that exited on its own ended.
fn exit_end(status: Option<std::process::ExitStatus>, output: String, omitted: u64) -> RunEnd {
    let code = status.and_then(|s| s.code());
    let signal = status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
    let mut o = RunOutcome {
        exit_code: code,
        signal,
        output,
        output_truncated_bytes: omitted,
        ..Default::default()
    };
    if code == Some(0) {
        RunEnd::Succeeded(o)
    } else {
        o.error = Some(match (code, signal) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => format!(
                "killed by signal {s} ({})",
                Signal::try_from(s).map(|s| s.as_str()).unwrap_or("unknown")
            ),
            _ => "exit status unknown".into(),
        });
        RunEnd::Failed(o)
    }
}

async fn collect(
    out: Option<tokio::task::JoinHandle<()>>,
    err: Option<tokio::task::JoinHandle<()>>,
) {
    for h in [out, err].into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
    }
}

fn take(buf: Arc<std::sync::Mutex<OutputBuffer>>, secrets: &[String]) -> (String, u64) {
    let b = match Arc::try_unwrap(buf) {
        Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(shared) => {
            let mut g = shared.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *g, OutputBuffer::new(0))
        }
    };
    b.finish(secrets)
}

fn json_template(v: &toml::Value, ctx: &RunContext) -> serde_json::Value {
    match v {
        toml::Value::String(s) => {
            let ph = crate::catalog::placeholders(s);
            if ph.len() == 1 && s == &format!("{{{}}}", ph[0]) {
                if let Some(val) = ctx.args.get(ph[0]) {
                    return val.to_json();
                }
                return serde_json::Value::Null;
            }
            serde_json::Value::String(render_template(s, |n| ctx.lookup(n)))
        }
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => {
            serde_json::Value::Array(a.iter().map(|x| json_template(x, ctx)).collect())
        }
        toml::Value::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, x)| (k.clone(), json_template(x, ctx)))
                .collect(),
        ),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_http(
    ctx: &RunContext,
    http: &reqwest::Client,
    url: &str,
    method: &str,
    headers: &BTreeMap<String, String>,
    body: Option<&toml::Value>,
    expect_status: &[u16],
    secrets: &[String],
) -> RunEnd {
    let url = render_template(url, |n| ctx.lookup(n).map(|v| percent_encode(&v)));
    let method = match reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(e) => {
            return RunEnd::Failed(RunOutcome {
                error: Some(format!("bad method: {e}")),
                ..Default::default()
            })
        }
    };
    let json = match body {
        Some(b) => json_template(b, ctx),
        None => serde_json::Value::Object(
            ctx.args
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        ),
    };
    let mut req = http
        .request(method.clone(), &url)
        .header("x-youops-request-id", ctx.request_id.to_string())
        .timeout(ctx.timeout);
    for (k, v) in headers {
        req = req.header(k.as_str(), render_template(v, |n| ctx.lookup(n)));
    }
    if method != reqwest::Method::GET {
        req = req.json(&json);
    }
    let fut = async {
        let resp = req.send().await?;
        let status = resp.status();
        let mut buf = OutputBuffer::new(ctx.output_limit);
        let mut resp = resp;
        while let Some(chunk) = resp.chunk().await? {
            buf.push(&chunk);
        }
        Ok::<_, reqwest::Error>((status, buf))
    };
    let res = tokio::select! {
        r = fut => r,
        _ = ctx.cancel.cancelled() => {
            return RunEnd::Cancelled(RunOutcome { error: Some("cancelled".into()), ..Default::default() });
        }
    };
    match res {
        Ok((status, buf)) => {
            let (body, omitted) = buf.finish(secrets);
            let ok = if expect_status.is_empty() {
                status.is_success()
            } else {
                expect_status.contains(&status.as_u16())
            };
            let mut o = RunOutcome {
                exit_code: Some(i32::from(status.as_u16())),
                output: format!("HTTP {status}\n{body}"),
                output_truncated_bytes: omitted,
                ..Default::default()
            };
            if ok {
                RunEnd::Succeeded(o)
            } else {
                o.error = Some(format!("unexpected HTTP status {status}"));
                RunEnd::Failed(o)
            }
        }
        Err(e) if e.is_timeout() => RunEnd::TimedOut(RunOutcome {
            error: Some(format!(
                "timed out after {}",
                crate::units::format_duration(ctx.timeout)
            )),
            ..Default::default()
        }),
        Err(e) => RunEnd::Failed(RunOutcome {
            error: Some(scrub(&format!("request failed: {e}"), secrets)),
            ..Default::default()
        }),
    }
}

async fn run_builtin(
    ctx: &RunContext,
    builtins: &Builtins,
    name: &str,
    secrets: &[String],
) -> RunEnd {
    let Some(b) = builtins.get(name) else {
        return RunEnd::Failed(RunOutcome {
            error: Some(format!(
                "no builtin named `{name}` is registered in this process"
            )),
            ..Default::default()
        });
    };
    let call = BuiltinCall {
        request_id: ctx.request_id,
        op: ctx.op.name.clone(),
        args: ctx.args.clone(),
        principal: ctx.principal.clone(),
        cancel: ctx.cancel.clone(),
    };
    let fut = b.call(call);
    // Cancellation is checked first: a builtin that watches `call.cancel` returns
    // as soon as it fires, and that run must still end `cancelled` (or
    // `interrupted`), never `failed` by the luck of an unbiased select.
    let res = tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => {
            return RunEnd::Cancelled(RunOutcome { error: Some("cancelled".into()), ..Default::default() });
        }
        _ = tokio::time::sleep(ctx.timeout) => {
            return RunEnd::TimedOut(RunOutcome {
                error: Some(format!("timed out after {}", crate::units::format_duration(ctx.timeout))),
                ..Default::default()
            });
        }
        r = fut => r,
    };
    let cap = |s: String| {
        let mut b = OutputBuffer::new(ctx.output_limit);
        b.push(s.as_bytes());
        b.finish(secrets)
    };
    match res {
        Ok(out) => {
            let (output, omitted) = cap(out);
            RunEnd::Succeeded(RunOutcome {
                exit_code: Some(0),
                output,
                output_truncated_bytes: omitted,
                ..Default::default()
            })
        }
        Err(msg) => {
            let (output, omitted) = cap(msg.clone());
            RunEnd::Failed(RunOutcome {
                exit_code: Some(1),
                output,
                output_truncated_bytes: omitted,
                error: Some(scrub(msg.lines().next().unwrap_or("failed"), secrets)),
                ..Default::default()
            })
        }
    }
}

#[cfg(test)]
mod tests;
