//! A per-node Unix socket proxy in front of a PostgreSQL server, to cut one
//! node off the database in tests.
//!
//! [`SockProxy::start`] listens on `.s.PGSQL.5432` in a new temporary
//! directory (the socket name libpq and tokio-postgres derive from port
//! 5432, the port of every [`PgCluster`](crate::pg::PgCluster)) and forwards
//! every connection byte for byte to the server's socket in the upstream
//! directory. [`blackhole`](SockProxy::blackhole) makes it behave like a
//! network partition: nothing is forwarded any more in either direction and
//! nothing is closed (a connection's pending bytes are held, not read
//! further), and new connections are accepted but never connected upstream.
//! [`heal`](SockProxy::heal) forwards again, the held bytes first. Dropping
//! the proxy closes every connection and the listener.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The port whose socket name the proxy serves and connects to (as
/// `PgCluster`'s).
const PORT: u16 = 5432;

/// The socket file name of [`PORT`] in a socket directory.
fn socket_name() -> String {
    format!(".s.PGSQL.{PORT}")
}

/// A running proxy (see the [module docs](self)).
#[derive(Debug)]
pub struct SockProxy {
    dir: tempfile::TempDir,
    open: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl SockProxy {
    /// Start a proxy to the server whose socket is in
    /// `upstream_socket_dir`; panics if it cannot listen (see
    /// [`try_start`](Self::try_start)). Needs a Tokio runtime.
    pub fn start(upstream_socket_dir: &Path) -> SockProxy {
        Self::try_start(upstream_socket_dir)
            .unwrap_or_else(|e| panic!("cannot start the socket proxy: {e}"))
    }

    /// Start a proxy to the server whose socket is in `upstream_socket_dir`.
    pub fn try_start(upstream_socket_dir: &Path) -> Result<SockProxy, String> {
        let dir = tempfile::Builder::new()
            .prefix("youops-sockproxy.")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot create a temporary directory in /tmp: {e}"))?;
        let path = dir.path().join(socket_name());
        let listener = UnixListener::bind(&path)
            .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        let upstream = upstream_socket_dir.join(socket_name());
        let (open, state) = watch::channel(true);
        let accept = tokio::spawn(accept_loop(listener, upstream, state));
        Ok(SockProxy { dir, open, accept })
    }

    /// The directory of the proxy's socket (`.s.PGSQL.5432` in it).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The connection URL of database `db` through the proxy, as the
    /// superuser `postgres` (like [`PgCluster::url`](crate::pg::PgCluster::url)).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@/{db}?host={}&port={PORT}",
            self.dir.path().display()
        )
    }

    /// Stop forwarding, in both directions, on every connection, without
    /// closing any; accept new connections but never forward them.
    pub fn blackhole(&self) {
        self.open.send_replace(false);
    }

    /// Forward again (what was held first).
    pub fn heal(&self) {
        self.open.send_replace(true);
    }

    /// Whether the proxy forwards now.
    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }
}

impl Drop for SockProxy {
    fn drop(&mut self) {
        // The accept task owns the connections' tasks: aborting it drops
        // them, closing every socket.
        self.accept.abort();
    }
}

async fn accept_loop(listener: UnixListener, upstream: PathBuf, state: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                conns.spawn(serve(client, upstream.clone(), state.clone()));
            }
            // Reap finished connections.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Wait until the proxy forwards; `false` if it is gone.
async fn wait_open(state: &mut watch::Receiver<bool>) -> bool {
    state.wait_for(|open| *open).await.is_ok()
}

/// One connection: connect upstream once open, then pump both ways.
async fn serve(client: UnixStream, upstream: PathBuf, mut state: watch::Receiver<bool>) {
    if !wait_open(&mut state).await {
        return;
    }
    let Ok(server) = UnixStream::connect(&upstream).await else {
        // The client sees its connection closed, as with a refused one.
        return;
    };
    let (client_rd, client_wr) = client.into_split();
    let (server_rd, server_wr) = server.into_split();
    let up = pump(client_rd, server_wr, state.clone());
    let down = pump(server_rd, client_wr, state);
    // When either side ends, the connection ends (both halves dropped).
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Copy `from` to `to` while open; while blackholed, hold what was read and
/// read no more.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut state: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !wait_open(&mut state).await {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Read while open, but the partition may have started since.
        if !wait_open(&mut state).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
