//! Runs a page's steps in order, as a reader would type them into a shell:
//! one shell state (exported variables, the working directory) carried from
//! command to command, one background process at a time (the daemon of the
//! first set-up command), ids captured from earlier output.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::parse::{Checks, Step};

/// How long a foreground command may run unless its checks say otherwise.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a background command may take to answer its URL (a release build
/// of the workspace comes first).
const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(2400);
/// How long a signalled background process may take to show a log phrase or exit.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a page failed.
#[derive(Debug)]
pub struct Failure {
    /// The step's line.
    pub line: usize,
    /// What went wrong, with the output that shows it.
    pub message: String,
}

/// A shell session for one page.
#[derive(Debug)]
pub struct Session {
    dir: PathBuf,
    state: PathBuf,
    captures: BTreeMap<String, String>,
    background: Option<Background>,
}

#[derive(Debug)]
struct Background {
    child: Child,
    log: PathBuf,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut bg) = self.background.take() {
            let _ = killpg(Pid::from_raw(bg.child.id() as i32), Signal::SIGKILL);
            let _ = bg.child.wait();
        }
    }
}

impl Session {
    /// A session whose commands start in `dir`; its shell state lives in
    /// `scratch` (the background log too).
    pub fn new(dir: &Path, scratch: &Path) -> std::io::Result<Session> {
        let state = scratch.join("shell-state");
        let mut f = fs::File::create(&state)?;
        writeln!(f, "cd {}", shell_quote(&dir.to_string_lossy()))?;
        Ok(Session {
            dir: dir.to_path_buf(),
            state,
            captures: BTreeMap::new(),
            background: None,
        })
    }

    /// Run one step; `Ok(Some(note))` for a step that passed, `Ok(None)` for
    /// a skipped one.
    pub fn step(&mut self, step: &Step) -> Result<Option<String>, Failure> {
        match step {
            Step::Command { line, text, checks } => {
                if checks.skip.is_some() {
                    return Ok(None);
                }
                let fail = |message: String| Failure {
                    line: *line,
                    message,
                };
                let text = self.substitute(text).map_err(fail)?;
                if let Some(url) = &checks.background {
                    self.start_background(&text, url, checks).map_err(fail)?;
                    return Ok(Some(format!("serving, {url} answers 200")));
                }
                self.foreground(&text, checks).map(Some).map_err(fail)
            }
            Step::Signal { line, checks } => {
                self.signal(checks).map(Some).map_err(|message| Failure {
                    line: *line,
                    message,
                })
            }
        }
    }

    /// `<NAME>` → what `capture.NAME` found earlier.
    fn substitute(&self, text: &str) -> Result<String, String> {
        let mut out = text.to_string();
        for (name, value) in &self.captures {
            out = out.replace(&format!("<{name}>"), value);
        }
        let re = regex::Regex::new(r"<([A-Z][A-Z_]*)>").expect("a valid regex");
        if let Some(m) = re.captures(&out) {
            return Err(format!(
                "<{}> was captured by no earlier step (add capture.{}=\"regex\" to one)",
                &m[1], &m[1]
            ));
        }
        Ok(out)
    }

    /// The shell script that runs `text` in the session's state and saves it.
    fn script(&self, text: &str) -> String {
        let state = shell_quote(&self.state.to_string_lossy());
        format!(
            ". {state}\n{text}\n__doccheck_rc=$?\n{{ export -p; printf 'cd %q\\n' \"$PWD\"; }} > {state}\nexit $__doccheck_rc\n"
        )
    }

    fn command(&self, script: String) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(script).current_dir(&self.dir);
        // A reader's fresh shell: no settings of ours or of a CI job.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("YOUOPS_") || k == "CARGO_TARGET_DIR" {
                cmd.env_remove(k.as_ref());
            }
        }
        cmd.process_group(0);
        cmd
    }

    fn foreground(&mut self, text: &str, checks: &Checks) -> Result<String, String> {
        let started = Instant::now();
        let child = self
            .command(self.script(text))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start bash: {e}"))?;
        let pgid = Pid::from_raw(child.id() as i32);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let limit = checks.timeout.map_or(COMMAND_TIMEOUT, Duration::from_secs);
        let out = match rx.recv_timeout(limit) {
            Ok(r) => r.map_err(|e| format!("waiting for the command: {e}"))?,
            Err(_) => {
                let _ = killpg(pgid, Signal::SIGKILL);
                return Err(format!(
                    "`{text}` ran longer than {} s (killed)",
                    limit.as_secs()
                ));
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let shown = || format!("\n--- output of `{text}`:\n{}", tail(&all, 60));
        let want = checks.exit.unwrap_or(0);
        let code = out.status.code();
        if code != Some(want) {
            return Err(format!(
                "exit {} where the docs expect {want}{}",
                code.map_or("by a signal".into(), |c| c.to_string()),
                shown()
            ));
        }
        phrases(&all, checks).map_err(|e| format!("{e}{}", shown()))?;
        for (name, pattern) in &checks.capture {
            let re = regex::Regex::new(pattern)
                .map_err(|e| format!("capture.{name}: bad regex: {e}"))?;
            let value = re
                .captures(&all)
                .and_then(|c| c.get(1).or_else(|| c.get(0)))
                .map(|m| m.as_str().to_string())
                .ok_or_else(|| format!("capture.{name}: `{pattern}` found nothing{}", shown()))?;
            self.captures.insert(name.clone(), value);
        }
        Ok(format!(
            "exit {want} ({:.1} s)",
            started.elapsed().as_secs_f64()
        ))
    }

    fn start_background(&mut self, text: &str, url: &str, checks: &Checks) -> Result<(), String> {
        if self.background.is_some() {
            return Err("a background command is already running (stop it first)".into());
        }
        let log = self.state.with_file_name("background.log");
        let out = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let state = shell_quote(&self.state.to_string_lossy());
        let child = self
            .command(format!(". {state}\nexec {text}\n"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start bash: {e}"))?;
        let mut bg = Background { child, log };
        let limit = checks
            .timeout
            .map_or(BACKGROUND_TIMEOUT, Duration::from_secs);
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = bg.child.try_wait() {
                return Err(format!(
                    "`{text}` exited ({status}) before {url} answered\n--- its output:\n{}",
                    bg.log_tail()
                ));
            }
            if http_ok(url) {
                break;
            }
            if Instant::now() > deadline {
                let _ = killpg(Pid::from_raw(bg.child.id() as i32), Signal::SIGKILL);
                let _ = bg.child.wait();
                return Err(format!(
                    "{url} did not answer 200 within {} s\n--- output of `{text}`:\n{}",
                    limit.as_secs(),
                    bg.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.background = Some(bg);
        Ok(())
    }

    fn signal(&mut self, checks: &Checks) -> Result<String, String> {
        let Some(bg) = self.background.as_mut() else {
            return Err("no background process to signal".into());
        };
        let sig = match checks.signal.as_deref() {
            Some("INT") => Signal::SIGINT,
            Some("HUP") => Signal::SIGHUP,
            _ => Signal::SIGTERM,
        };
        // Ctrl-C reaches the terminal's whole foreground process group.
        killpg(Pid::from_raw(bg.child.id() as i32), sig)
            .map_err(|e| format!("cannot send {sig}: {e}"))?;
        let deadline = Instant::now() + checks.timeout.map_or(SIGNAL_TIMEOUT, Duration::from_secs);
        for phrase in &checks.log_contains {
            while !bg.log_text().contains(phrase.as_str()) {
                if Instant::now() > deadline {
                    return Err(format!(
                        "after {sig}, the background output never showed `{phrase}`\n--- its output:\n{}",
                        bg.log_tail()
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let Some(want) = checks.exit else {
            return Ok(format!("{sig} sent"));
        };
        loop {
            match bg.child.try_wait() {
                Ok(Some(status)) if status.code() == Some(want) => break,
                Ok(Some(status)) => {
                    return Err(format!(
                        "after {sig}, the background process exited {status}, not {want}\n--- its output:\n{}",
                        bg.log_tail()
                    ))
                }
                _ if Instant::now() > deadline => {
                    return Err(format!(
                        "after {sig}, the background process did not exit in time\n--- its output:\n{}",
                        bg.log_tail()
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        self.background = None;
        Ok(format!("{sig} sent, exit {want}"))
    }
}

impl Background {
    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        tail(&self.log_text(), 40)
    }
}

/// Every `contains` phrase present and every `not-contains` one absent.
fn phrases(output: &str, checks: &Checks) -> Result<(), String> {
    for p in &checks.contains {
        if !output.contains(p.as_str()) {
            return Err(format!("the output does not contain `{p}`"));
        }
    }
    for p in &checks.not_contains {
        if output.contains(p.as_str()) {
            return Err(format!(
                "the output contains `{p}`, which the docs rule out"
            ));
        }
    }
    Ok(())
}

/// Whether `url` (`http://host:port/path`) answers 200 now.
fn http_ok(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut s) = TcpStream::connect(host) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[8..] == b" 200"
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `s` in single quotes for a shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
