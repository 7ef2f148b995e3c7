//! Connections: TLS or not as the URL says, errors described without the
//! password, and a small pool for reads (the writer keeps its own
//! connection, so reads never queue behind its transaction).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use tokio::sync::{mpsc, Semaphore, SemaphorePermit};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;
use youops_core::audit::StoreError;

use crate::url::{PgUrl, SslMode};

/// Removes the password from whatever is shown (errors, logs).
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secret: Option<Arc<str>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor")
    }
}

impl Redactor {
    pub(crate) fn new(password: Option<String>) -> Self {
        Redactor {
            // A password of one or two characters cannot be told from the
            // text around it; it is not searched for.
            secret: password.filter(|p| p.len() >= 3).map(Arc::from),
        }
    }

    pub(crate) fn clean(&self, text: String) -> String {
        match &self.secret {
            Some(s) if text.contains(&**s) => text.replace(&**s, "***"),
            _ => text,
        }
    }

    /// `what: <the error, its causes>`, as a [`StoreError::Io`].
    pub(crate) fn io(&self, what: &str, e: &tokio_postgres::Error) -> StoreError {
        StoreError::Io(self.clean(format!("{what}: {}", describe(e))))
    }
}

/// The error and its causes: tokio-postgres says only `db error` for an
/// error the server sent, and keeps the server's message in its source.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(d) = db.detail() {
            s.push_str(&format!("; {d}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

/// Whether the error means the connection is gone (or the server is not
/// accepting yet): a new connection may succeed where this one failed.
pub(crate) fn is_connection(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                ]
                .contains(code)
        }
        // No SQLSTATE: an I/O error, a closed socket, a TLS failure.
        None => true,
    }
}

/// The next [`Conn::serial`].
static SERIALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether the server refused a statement's cached plan, because a
/// migration changed what it returns: prepared anew, it runs.
pub(crate) fn stale_plan(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED)
        && e.as_db_error().is_some_and(|d| {
            d.message()
                .contains("cached plan must not change result type")
        })
}

/// Makes connections: the URL's settings, the store's session name, TLS if
/// the URL asks for it.
pub(crate) struct Connector {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    pub(crate) redact: Redactor,
    /// The store's session name (`application_name`), unique to it.
    pub(crate) session: String,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A connection and its server process id.
pub(crate) struct Conn {
    pub(crate) client: Client,
    pub(crate) pid: i32,
    /// Unique to this connection in the process (a server process id may
    /// come again, on a restarted server).
    pub(crate) serial: u64,
    /// A group commit sent `BEGIN` and has not seen its transaction end
    /// (see [`crate::group::commit_group`]): a connection left so is closed,
    /// never used again (the server then rolls the transaction back).
    pub(crate) in_transaction: bool,
    /// The statements the [`Pool`] prepared on this connection, by text.
    prepared: HashMap<String, Statement>,
}

impl Connector {
    pub(crate) fn new(url: &PgUrl, session: &str) -> Result<Connector, StoreError> {
        let mut config = url.config().clone();
        config.application_name(session);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        let redact = Redactor::new(url.password());
        let tls = match (url.uses_tls(), url.ssl_mode()) {
            (false, _) => {
                // No TLS over a Unix socket, whatever the mode (as libpq):
                // the server would refuse it, failing `require`.
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                None
            }
            // A root file named in the URL is read in every mode: a typo in
            // its path is an error, not a quiet fallback.
            (true, SslMode::Prefer) if url.ssl_root_cert().is_none() => match tls_config(url) {
                Ok(c) => Some(MakeRustlsConnect::new(c)),
                Err(e) => {
                    // `prefer` may go without TLS; the stricter modes may not.
                    tracing::warn!(error = %e, "PostgreSQL: sslmode=prefer, connecting without TLS");
                    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                    None
                }
            },
            (true, _) => Some(MakeRustlsConnect::new(
                tls_config(url).map_err(|e| StoreError::Io(redact.clean(e)))?,
            )),
        };
        Ok(Connector {
            config,
            tls,
            redact,
            session: session.to_string(),
        })
    }

    /// A new connection; its driver runs on a task of its own until the
    /// client is dropped or the connection breaks.
    pub(crate) async fn connect(&self) -> Result<Conn, StoreError> {
        self.open(None).await
    }

    /// A new connection whose notifications (`LISTEN`) go to `notes`: when
    /// `notes` is full, one is dropped (its reader is behind, and will read
    /// the ones before it).
    pub(crate) async fn connect_listening(
        &self,
        notes: mpsc::Sender<Notification>,
    ) -> Result<Conn, StoreError> {
        self.open(Some(notes)).await
    }

    async fn open(&self, notes: Option<mpsc::Sender<Notification>>) -> Result<Conn, StoreError> {
        let failed = |e: tokio_postgres::Error| self.redact.io("cannot connect to PostgreSQL", &e);
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) =
                    self.config.connect(tls.clone()).await.map_err(failed)?;
                tokio::spawn(drive(connection, notes));
                client
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(failed)?;
                tokio::spawn(drive(connection, notes));
                client
            }
        };
        // A transaction whose client vanished without a word (COMMIT never
        // sent) must not hold the chain tip for long. Statements are kept
        // prepared (the group's, the pool's reads), and planned for their
        // values each time: a generic plan, which the server would choose
        // after five runs, made a group commit several times slower
        // (durable requests/s fell from about 8,000 to 1,300 on one node).
        let row = client
            .query_one(
                "SELECT pg_backend_pid(),
                        set_config('idle_in_transaction_session_timeout', '60s', false),
                        set_config('plan_cache_mode', 'force_custom_plan', false)",
                &[],
            )
            .await
            .map_err(failed)?;
        let pid = row
            .try_get::<_, i32>(0)
            .map_err(|e| StoreError::Corrupt(format!("pg_backend_pid(): {e}")))?;
        Ok(Conn {
            client,
            pid,
            in_transaction: false,
            prepared: HashMap::new(),
            serial: SERIALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }
}

/// Run `connection` until it ends, passing its notifications to `notes`.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notes: Option<mpsc::Sender<Notification>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                if let Some(notes) = &notes {
                    if let Err(mpsc::error::TrySendError::Closed(_)) = notes.try_send(n) {
                        // Nobody listens any more: let the connection go.
                        return;
                    }
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                // The client sees the same error (or `closed`) on its next call.
                tracing::debug!(error = %describe(&e), "PostgreSQL connection ended");
                return;
            }
            None => return,
        }
    }
}

/// The TLS settings for `url`: its `sslrootcert`'s certificates or the
/// system's roots; the host name checked unless `sslmode=verify-ca`.
fn tls_config(url: &PgUrl) -> Result<rustls::ClientConfig, String> {
    let roots = match url.ssl_root_cert() {
        Some(path) => file_roots(path)?,
        None => native_roots()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    if url.ssl_mode() != SslMode::VerifyCa {
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    }
    let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("TLS setup: {e}"))?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainOnly(chain)))
        .with_no_client_auth())
}

fn native_roots() -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A certificate rustls cannot use is skipped, as the system's other
        // TLS clients skip it.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!(
            "TLS to PostgreSQL needs root certificates, and none were found on this system{}",
            found
                .errors
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    Ok(roots)
}

/// Exactly the certificates of the PEM file `path` (`sslrootcert`).
fn file_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let shown = path.display();
    let pem =
        std::fs::read(path).map_err(|e| format!("sslrootcert {shown}: cannot read it: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| format!("sslrootcert {shown}: not a PEM certificate file: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert {shown}: a certificate TLS cannot use: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "sslrootcert {shown}: holds no certificate (no `-----BEGIN CERTIFICATE-----` section)"
        ));
    }
    Ok(roots)
}

/// `sslmode=verify-ca`: the server's certificate chain is verified, its
/// names are not. rustls checks the name only after the chain, so a name
/// error means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified =
            self.0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        match verified {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A few connections for reads, made on demand and kept while healthy.
#[derive(Debug)]
pub(crate) struct Pool {
    connector: Arc<Connector>,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn(pid {})", self.pid)
    }
}

/// The most statements the pool keeps prepared on one connection; past it,
/// it forgets them all (reads are few, a listing's filters make the rest).
const PREPARED_PER_CONNECTION: usize = 64;

impl Conn {
    /// Run `sql` by its statement prepared on this connection, prepared now
    /// if it is not yet: a read then costs one round trip, not two.
    async fn query_prepared(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = match self.prepared.get(sql) {
            Some(s) => s.clone(),
            None => {
                let s = self.client.prepare(sql).await?;
                if self.prepared.len() >= PREPARED_PER_CONNECTION {
                    self.prepared.clear();
                }
                self.prepared.insert(sql.to_owned(), s.clone());
                s
            }
        };
        let rows = self.client.query(&statement, params).await;
        if rows.as_ref().is_err_and(stale_plan) {
            // Prepared anew at the next try.
            self.prepared.clear();
        }
        rows
    }
}

/// A connection taken from the [`Pool`]; back into it when dropped, unless
/// it broke.
pub(crate) struct Pooled<'a> {
    conn: Option<Conn>,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl Pooled<'_> {
    /// The connection's client (until the connection is thrown away).
    pub(crate) fn client(&mut self) -> Result<&mut Client, StoreError> {
        self.conn
            .as_mut()
            .map(|c| &mut c.client)
            .ok_or(StoreError::Closed)
    }

    /// Do not put the connection back into the pool.
    pub(crate) fn discard(&mut self) {
        drop(self.conn.take());
    }

    /// The connection (until it is thrown away).
    fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        self.conn.as_mut().ok_or(StoreError::Closed)
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            if !c.client.is_closed() {
                lock(&self.pool.idle).push(c);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pool {
    pub(crate) fn new(connector: Arc<Connector>, size: usize) -> Pool {
        Pool {
            connector,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        }
    }

    pub(crate) fn redact(&self) -> &Redactor {
        &self.connector.redact
    }

    /// A connection: an idle one that is still open, or a new one.
    pub(crate) async fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let idle = loop {
            let c = lock(&self.idle).pop();
            match c {
                Some(c) if c.client.is_closed() => continue,
                other => break other,
            }
        };
        let conn = match idle {
            Some(c) => c,
            None => self.connector.connect().await?,
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: self,
            _permit: permit,
        })
    }

    /// Run a read query; once more on a new connection if the connection
    /// broke (a restarted server leaves every idle connection broken).
    pub(crate) async fn query(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut c = self.get().await?;
            match c.conn()?.query_prepared(sql, params).await {
                Ok(rows) => return Ok(rows),
                Err(e) if tries < 3 && is_connection(&e) => {
                    // Not back into the pool.
                    c.discard();
                    tokio::time::sleep(Duration::from_millis(50 * tries)).await;
                }
                // A migration changed what the statement returns: it was
                // forgotten, and is prepared anew.
                Err(e) if tries < 3 && stale_plan(&e) => {}
                Err(e) => return Err(self.redact().io(what, &e)),
            }
        }
    }

    /// [`query`](Self::query) expecting at most one row.
    pub(crate) async fn query_opt(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let mut rows = self.query(what, sql, params).await?;
        if rows.len() > 1 {
            return Err(StoreError::Corrupt(format!(
                "{what}: {} rows where at most one was expected",
                rows.len()
            )));
        }
        Ok(rows.pop())
    }

    /// [`query`](Self::query) expecting exactly one row.
    pub(crate) async fn query_one(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, StoreError> {
        self.query_opt(what, sql, params)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("{what}: no row")))
    }
}
