//! The daemons under test: `youops serve` processes, each with a config file
//! of its own (a 127.0.0.1 port, the benchmark principal, a builtin no-op op)
//! on one store: the embedded log store, or a PostgreSQL URL shared by the
//! nodes of a cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// The op every request submits: the builtin no-op runner.
pub(crate) const OP: &str = "bench.noop";

/// Where a node keeps its audit chain.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    /// The embedded log store in this directory.
    Embedded(PathBuf),
    /// A PostgreSQL store (`[store] url`) as node `n<i>`.
    Postgres(String),
}

/// A running `youops serve`.
#[derive(Debug)]
pub(crate) struct Node {
    child: Child,
    pub(crate) base: String,
    pub(crate) log: PathBuf,
}

/// A random bearer token, and the config line that admits it.
pub(crate) fn token() -> (String, String) {
    let seed = format!("{:?}{}", Instant::now(), std::process::id());
    let token = format!(
        "bench-{}",
        hex::encode(&sha2::Sha256::digest(seed.as_bytes())[..16])
    );
    let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    (token, format!("sha256:{digest}"))
}

/// A free port on 127.0.0.1 (the kernel picks; tiny race before the daemon binds).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The config file of node `id` on `store`, listening on `port`.
fn config(id: &str, port: u16, store: &Store, digest: &str) -> String {
    let (node, store) = match store {
        Store::Embedded(dir) => (String::new(), format!("path = {:?}", dir.display())),
        Store::Postgres(url) => (format!("node_id = \"{id}\"\n"), format!("url = {url:?}")),
    };
    format!(
        "# Written by youops-cluster-bench.\n[server]\nlisten = \"127.0.0.1:{port}\"\n{node}\n\
         [executor]\n# The per-principal rate limit would cap the one benchmark principal: off.\n\
         rate_limit_per_minute = 0\n\n[store]\n{store}\n\n\
         [[ops]]\nname = \"{OP}\"\ndescription = \"Benchmark: builtin no-op runner\"\n\
         runner = {{ type = \"builtin\", name = \"noop\" }}\ntimeout = \"10s\"\n\n\
         [principals.bench]\nroles = [\"bench\"]\ntokens = [\"{digest}\"]\n\n\
         [[grants]]\nroles = [\"bench\"]\nops = [\"{OP}\"]\nfrontends = [\"api\"]\n"
    )
}

impl Node {
    /// Start node `id` of `store` (config and log in `dir`); it is not ready
    /// until [`wait_ready`](Self::wait_ready).
    pub(crate) fn start(
        youops: &Path,
        dir: &Path,
        id: &str,
        store: &Store,
        digest: &str,
    ) -> Result<Node, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let conf = dir.join(format!("{id}.toml"));
        let log = dir.join(format!("{id}.log"));
        std::fs::write(&conf, config(id, port, store, digest))
            .map_err(|e| format!("writing {}: {e}", conf.display()))?;
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(youops)
            .arg("serve")
            .arg("--config")
            .arg(&conf)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", youops.display()))?;
        Ok(Node {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        })
    }

    /// Until `/healthz` answers 200 (at most 60 s).
    pub(crate) fn wait_ready(&mut self, rt: &tokio::runtime::Runtime) -> Result<(), String> {
        let url = format!("{}/healthz", self.base);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("{} exited ({st}): {}", self.base, self.log_tail()));
            }
            let ok = rt.block_on(async {
                let get = reqwest::Client::new()
                    .get(&url)
                    .timeout(Duration::from_secs(1));
                get.send().await.is_ok_and(|r| r.status().is_success())
            });
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("{url}: no answer within 60 s: {}", self.log_tail()))
    }

    /// Its pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then up to 30 s for it to exit (SIGKILL after); its exit status.
    pub(crate) fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.to_string();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        "killed: no exit within 30 s of SIGTERM".into()
    }

    /// The last lines of its log, on one line.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join(" | ")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A node left running (an error on the way) must not outlive the run.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The warnings and errors a daemon logged (it runs with `RUST_LOG=warn`):
/// their count, and the first few.
pub(crate) fn log_issues(log: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(str::to_string)
        .collect();
    (lines.len(), lines.into_iter().take(3).collect())
}
