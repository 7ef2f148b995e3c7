//! A throw-away PostgreSQL cluster for tests: [`PgCluster::start`] runs
//! `initdb` into a temporary directory and starts `postgres` there, reached
//! only through a Unix socket in that directory (`listen_addresses = ''`),
//! with `fsync` on. Each test makes its own databases
//! ([`create_database`](PgCluster::create_database)); a test that restarts or
//! stops the server starts a cluster of its own. Dropping the cluster stops
//! the server (`pg_ctl stop -m immediate`) and removes its directories.
//!
//! The binaries are looked up in `/usr/lib/postgresql/<version>/bin` (Debian
//! keeps them off `PATH`; the highest version wins), then on `PATH`. When
//! PostgreSQL is not installed, [`start`](PgCluster::start) fails with a
//! message saying that `scripts/test.sh` installs it: tests fail, they do not
//! skip. `initdb`, `pg_ctl` and `postgres` refuse to run as root: as root, they
//! run as the `postgres` user (or `nobody`) through `runuser` (or `setpriv`),
//! and the cluster's directories belong to that user.
//!
//! Roles in the group `youops_password_users`
//! ([`create_password_role`](PgCluster::create_password_role)) log in with a
//! password (SCRAM); every other role is trusted on the socket.
//!
//! [`PgCluster::start_with_tls`] also listens on `127.0.0.1` (a free port,
//! which then also names the socket file), with `ssl = on` and a server
//! certificate (for `127.0.0.1` and `localhost`) signed by a throw-away CA,
//! both made with the `openssl` command; every role logs in there with a
//! password (SCRAM), with or without TLS. It listens on `127.0.0.2` too,
//! which the certificate does not name (for host name checks).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The port: it only names the socket file (`.s.PGSQL.5432`) in the cluster's
/// own socket directory, so every cluster can use the same.
const PORT: u16 = 5432;

/// The group whose members authenticate with a password.
const PASSWORD_GROUP: &str = "youops_password_users";

/// The user the server runs as, when the tests run as root.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// A running throw-away PostgreSQL cluster (see the [module docs](self)).
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    root: tempfile::TempDir,
    run_as: Option<RunAs>,
    next_db: AtomicU64,
    running: bool,
    /// The port: TCP (when listening on 127.0.0.1) and the socket file's name.
    port: u16,
}

/// The TLS side of a cluster from [`PgCluster::start_with_tls`]; its files
/// live (and die) with the cluster's directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The PEM certificate of the CA that signed the server's certificate.
    pub ca_pem: PathBuf,
    /// The PEM certificate of another throw-away CA, which signed nothing
    /// the server shows: trusting only it must fail.
    pub other_ca_pem: PathBuf,
    /// The TCP port on 127.0.0.1 (and 127.0.0.2, which the server's
    /// certificate does not name).
    pub port: u16,
}

impl PgCluster {
    /// `initdb` a new cluster in a temporary directory and start it; wait
    /// until it accepts connections.
    pub fn start() -> Result<PgCluster, String> {
        PgCluster::start_inner(false).map(|(c, _)| c)
    }

    /// As [`start`](Self::start), also listening on 127.0.0.1 with TLS (see
    /// the [module docs](self)). `ssl` can be turned off for a while with
    /// `ALTER SYSTEM SET ssl = off` and `SELECT pg_reload_conf()`.
    pub fn start_with_tls() -> Result<(PgCluster, TlsFiles), String> {
        let (cluster, tls) = PgCluster::start_inner(true)?;
        let tls = tls.ok_or("no TLS files")?;
        Ok((cluster, tls))
    }

    fn start_inner(tls: bool) -> Result<(PgCluster, Option<TlsFiles>), String> {
        let bin = find_bin_dir()?;
        let run_as = run_as()?;
        let root = tempfile::Builder::new()
            .prefix("youops-pg.")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot create a temporary directory in /tmp: {e}"))?;
        let mut cluster = PgCluster {
            bin,
            root,
            run_as,
            next_db: AtomicU64::new(1),
            running: false,
            port: if tls { free_port()? } else { PORT },
        };
        std::fs::create_dir(cluster.socket_dir())
            .map_err(|e| format!("cannot create the socket directory: {e}"))?;
        cluster.chown_root()?;
        cluster.initdb()?;
        cluster.configure()?;
        let files = if tls {
            Some(cluster.configure_tls()?)
        } else {
            None
        };
        cluster.chown_root()?;
        cluster.pg_ctl_start()?;
        cluster.psql("postgres", &format!("CREATE ROLE {PASSWORD_GROUP} NOLOGIN"))?;
        Ok((cluster, files))
    }

    /// The certificates, `ssl = on`, listening on 127.0.0.1, password
    /// logins over TCP.
    fn configure_tls(&self) -> Result<TlsFiles, String> {
        let dir = self.root.path().join("tls");
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        make_ca(&dir, "ca")?;
        make_ca(&dir, "other_ca")?;
        make_server_cert(&dir)?;
        let settings = format!(
            "listen_addresses = '127.0.0.1,127.0.0.2'\nssl = on\nssl_cert_file = '{}'\n\
             ssl_key_file = '{}'\n",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        );
        append(&self.data_dir().join("postgresql.conf"), &settings)?;
        append(
            &self.data_dir().join("pg_hba.conf"),
            "host all all 127.0.0.0/8 scram-sha-256\n",
        )?;
        Ok(TlsFiles {
            ca_pem: dir.join("ca.pem"),
            other_ca_pem: dir.join("other_ca.pem"),
            port: self.port,
        })
    }

    /// The URL of database `db` as `user:password` over TCP to
    /// `127.0.0.1:<port>` (a [`start_with_tls`](Self::start_with_tls)
    /// cluster), with `extra_params` (`sslmode=…&…`) as its query.
    pub fn tcp_url(&self, user: &str, password: &str, db: &str, extra_params: &str) -> String {
        let mut url = format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port);
        if !extra_params.is_empty() {
            url.push('?');
            url.push_str(extra_params);
        }
        url
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.path().join("sock")
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.root.path().join("postgres.log")
    }

    /// The connection URL of database `db`, as the superuser `postgres`,
    /// through the socket: `postgresql://postgres@/db?host=/tmp/…/sock&port=5432`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@/{db}?host={}&port={}",
            self.socket_dir().display(),
            self.port
        )
    }

    /// A new, empty database; its connection URL. Panics if the server
    /// refuses (see [`try_create_database`](Self::try_create_database)).
    pub fn create_database(&self) -> String {
        self.try_create_database()
            .unwrap_or_else(|e| panic!("cannot create a test database: {e}"))
    }

    /// A new, empty database; its connection URL.
    pub fn try_create_database(&self) -> Result<String, String> {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// A role `name` that logs in with `password` (the socket trusts every
    /// other role).
    pub fn create_password_role(&self, name: &str, password: &str) -> Result<(), String> {
        let quoted = password.replace('\'', "''");
        self.psql(
            "postgres",
            &format!(
                "CREATE ROLE {name} LOGIN SUPERUSER PASSWORD '{quoted}' IN ROLE {PASSWORD_GROUP}"
            ),
        )
        .map(drop)
    }

    /// Run `sql` in database `db` with `psql` as the superuser; its output
    /// (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ]);
        let out = run(cmd, "psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Restart the server (`pg_ctl restart -m fast`): every session is cut.
    pub fn restart(&mut self) -> Result<(), String> {
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-m", "fast", "restart"]);
        run(cmd, "pg_ctl restart").map_err(|e| self.with_log(e))?;
        self.running = true;
        self.wait_ready()
    }

    /// Stop the server (`pg_ctl stop -m fast`).
    pub fn stop(&mut self) -> Result<(), String> {
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "60", "-m", "fast", "stop"]);
        run(cmd, "pg_ctl stop")?;
        self.running = false;
        Ok(())
    }

    /// Start the server again after [`stop`](Self::stop).
    pub fn start_again(&mut self) -> Result<(), String> {
        self.pg_ctl_start()
    }

    fn initdb(&self) -> Result<(), String> {
        let mut cmd = self.server_command("initdb");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync");
        run(cmd, "initdb").map(drop)
    }

    /// Socket only, fsync on, small; password logins for [`PASSWORD_GROUP`].
    fn configure(&self) -> Result<(), String> {
        use std::io::Write as _;
        let conf = self.data_dir().join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(|e| format!("cannot open {}: {e}", conf.display()))?;
        let settings = format!(
            "\n# youops-testkit\nlisten_addresses = ''\nunix_socket_directories = '{}'\n\
             port = {}\nfsync = on\nshared_buffers = 16MB\nmax_connections = 100\n\
             password_encryption = 'scram-sha-256'\n",
            self.socket_dir().display(),
            self.port
        );
        f.write_all(settings.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let hba = self.data_dir().join("pg_hba.conf");
        let rules = format!("local all +{PASSWORD_GROUP} scram-sha-256\nlocal all all trust\n");
        std::fs::write(&hba, rules).map_err(|e| format!("cannot write {}: {e}", hba.display()))
    }

    fn pg_ctl_start(&mut self) -> Result<(), String> {
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "start"]);
        run(cmd, "pg_ctl start").map_err(|e| self.with_log(e))?;
        self.running = true;
        self.wait_ready()
    }

    /// Until `SELECT 1` answers (`pg_ctl -w` waits too; this also covers a
    /// server still in recovery).
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.psql("postgres", "SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(self.with_log(format!("the server did not get ready: {e}")))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn with_log(&self, e: String) -> String {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{e}\nserver log (last lines):\n{}", tail.join("\n"))
    }

    /// A command of the server's binaries, as the unprivileged user if root.
    fn server_command(&self, name: &str) -> Command {
        let prog = self.bin.join(name);
        let mut cmd = match &self.run_as {
            Some(u) if Path::new("/usr/sbin/runuser").exists() || on_path("runuser") => {
                let mut c = Command::new("runuser");
                c.args(["-u", &u.name, "--"]).arg(prog);
                c
            }
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={}", u.uid))
                    .arg(format!("--regid={}", u.gid))
                    .arg("--clear-groups")
                    .arg(prog);
                c
            }
            None => Command::new(prog),
        };
        cmd.current_dir(self.root.path());
        cmd
    }

    /// Give the cluster's directories to the server's user (when root).
    fn chown_root(&self) -> Result<(), String> {
        let Some(u) = &self.run_as else {
            return Ok(());
        };
        chown_tree(self.root.path(), u.uid, u.gid)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let mut cmd = self.server_command("pg_ctl");
            cmd.arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "30", "-m", "immediate", "stop"]);
            let _ = run(cmd, "pg_ctl stop");
        }
    }
}

/// A free TCP port on 127.0.0.1 (free when asked: the server binds it soon
/// after, there and on 127.0.0.2, where it is free too in practice).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot append to {}: {e}", path.display()))
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(args);
    run(cmd, "openssl (is it installed?)").map(drop)
}

/// A throw-away CA: `<name>.key` and the self-signed `<name>.pem` in `dir`.
fn make_ca(dir: &Path, name: &str) -> Result<(), String> {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    let subject = format!("/CN=youops-test-{name}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "7",
            "-subj",
            &subject,
        ],
    )
}

/// `server.key` and `server.pem` (for `127.0.0.1` and `localhost`, signed by
/// `ca`) in `dir`; the key readable by its owner only, as PostgreSQL wants.
fn make_server_cert(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\n\
         keyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", ext.display()))?;
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "7",
            "-extfile",
            "server.ext",
        ],
    )?;
    let key = dir.join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod {}: {e}", key.display()))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("cannot chown {}: {e}", path.display()))?;
    if path.is_dir() && !path.is_symlink() {
        let entries =
            std::fs::read_dir(path).map_err(|e| format!("cannot list {}: {e}", path.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("cannot list {}: {e}", path.display()))?;
            chown_tree(&e.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Run `cmd`; an error with its output unless it exits 0.
fn run(mut cmd: Command, what: &str) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what} ({cmd:?}): {e}"))?;
    if out.status.success() {
        return Ok(out);
    }
    Err(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    ))
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// `/usr/lib/postgresql/<highest version>/bin`, or the directory of `initdb`
/// on `PATH`.
fn find_bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Some(p) = std::env::var_os("PATH") {
        if let Some(d) = std::env::split_paths(&p).find(|d| d.join("initdb").is_file()) {
            return Ok(d);
        }
    }
    Err(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no initdb on PATH): \
         `scripts/test.sh` installs it (apt-get install postgresql)"
            .into(),
    )
}

/// The user to run the server as: `None` unless root; then `postgres`, or
/// `nobody`.
fn run_as() -> Result<Option<RunAs>, String> {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| format!("cannot tell who runs the tests (/proc/self): {e}"))?;
    if uid != 0 {
        return Ok(None);
    }
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| format!("cannot read users: {e}"))?;
    let find = |name: &str| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == name).then(|| {
                Some(RunAs {
                    name: name.to_string(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                })
            })?
        })
    };
    find("postgres")
        .or_else(|| find("nobody"))
        .map(Some)
        .ok_or_else(|| {
            "running as root, and there is neither a `postgres` nor a `nobody` user to run \
             PostgreSQL as"
                .to_string()
        })
}
