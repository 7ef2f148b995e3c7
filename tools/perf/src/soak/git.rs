//! The git door: commits to the repository the git frontend watches, each
//! changing one declared resource and carrying a `Youops-Run:` trailer.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ctx::Ctx;
use super::doors::{send, Door, Recs};

/// Resources declared in `state/services.toml`.
const SERVICES: usize = 20;
/// `git` CLI calls are bounded by this.
const GIT_TIMEOUT: Duration = Duration::from_secs(20);

fn git(repo: &Path, args: &[&str]) -> Result<(), String> {
    let mut child = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "gc.auto=0", "-c", "commit.gpgsign=false"])
        .args(args)
        .env("GIT_AUTHOR_NAME", "Soak Bot")
        .env("GIT_AUTHOR_EMAIL", "soak-git@example.invalid")
        .env("GIT_COMMITTER_NAME", "Soak Bot")
        .env("GIT_COMMITTER_EMAIL", "soak-git@example.invalid")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("git {}: {e}", args.join(" ")))?;
    let until = Instant::now() + GIT_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read as _;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("git {}: {st}: {}", args.join(" "), err.trim()));
            }
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("git {}: timed out", args.join(" ")));
            }
            Err(e) => return Err(format!("git {}: {e}", args.join(" "))),
        }
    }
}

/// The desired-state file after commit `n` (resource `n % SERVICES` gets
/// version `n`; the others keep theirs).
fn services_toml(versions: &[u64]) -> String {
    let mut s = String::from("# Written by youops-soak.\n");
    for (i, v) in versions.iter().enumerate() {
        s.push_str(&format!(
            "\n[[resource]]\nkind = \"svc\"\nname = \"svc{i:02}\"\nversion = \"v{v}\"\n"
        ));
    }
    s
}

/// One commit: bump one resource, add a trailer command.
pub(crate) fn git_commit(repo: &Path, versions: &mut [u64], n: u64) -> Result<(), String> {
    let i = (n as usize) % versions.len();
    versions[i] = n;
    std::fs::write(repo.join("state/services.toml"), services_toml(versions))
        .map_err(|e| format!("writing state/services.toml: {e}"))?;
    git(repo, &["add", "state/services.toml"])?;
    let msg = format!("soak: svc{i:02} to v{n}\n\nYouops-Run: soak.echo msg=git{n}\n");
    git(repo, &["commit", "-q", "-m", &msg])
}

/// The git committer: its own thread and clock, a commit (+ webhook) every
/// `--git-every` from `start` until `load_end`. Joins to (commits, `git
/// commit` durations in µs, sorted).
pub(crate) fn spawn_committer(
    ctx: Arc<Ctx>,
    recs: Arc<Recs>,
    client: reqwest::Client,
    handle: tokio::runtime::Handle,
    start: Instant,
    load_end: Instant,
) -> JoinHandle<(u64, Vec<u32>)> {
    std::thread::spawn(move || {
        let rec = &recs[&Door::Git];
        let mut versions = vec![0u64; SERVICES];
        let mut commits = 0u64;
        let mut commit_ms: Vec<u32> = Vec::new();
        let mut n = 1u64;
        while !ctx.args.git_every.is_zero() {
            let due = start + ctx.args.git_every.mul_f64(n as f64);
            if due >= load_end {
                break;
            }
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let t0 = Instant::now();
            match git_commit(&ctx.args.git_repo, &mut versions, n) {
                Ok(()) => {
                    commits += 1;
                    commit_ms.push(t0.elapsed().as_micros() as u32);
                }
                Err(e) => {
                    rec.errors.fetch_add(1, Ordering::Relaxed);
                    rec.problem(e);
                    n += 1;
                    continue;
                }
            }
            rec.sent.fetch_add(1, Ordering::Relaxed);
            let rb = ctx.request(&client, Door::Git, n);
            let res = handle.block_on(send(rb));
            rec.record(start, t0, res);
            n += 1;
        }
        commit_ms.sort_unstable();
        (commits, commit_ms)
    })
}
