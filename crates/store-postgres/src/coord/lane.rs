//! The coordinator's connections: every use bounded by a timeout, and a
//! connection whose use timed out (a blackholed network: the query never
//! answers) is dropped, never reused, so the next use starts afresh.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};
use youops_core::audit::StoreError;

use crate::conn::{Conn, Connector, Redactor};

/// The most idle connections kept.
const KEEP_IDLE: usize = 4;

/// Connections for the coordinator's queries (see the module docs).
#[derive(Debug)]
pub(crate) struct Lane {
    connector: Arc<Connector>,
    idle: Mutex<Vec<Conn>>,
    timeout: Duration,
}

impl Lane {
    pub(crate) fn new(connector: Arc<Connector>, timeout: Duration) -> Lane {
        Lane {
            connector,
            idle: Mutex::new(Vec::new()),
            timeout,
        }
    }

    pub(crate) fn redact(&self) -> &Redactor {
        &self.connector.redact
    }

    /// The default bound of one use.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on a connection (an idle one, or a new one), all within the
    /// default timeout.
    pub(crate) async fn run<T>(
        &self,
        what: &str,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.run_within(what, self.timeout, f).await
    }

    /// One statement's rows ([`run`](Self::run) of a single query).
    pub(crate) async fn query(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.run(what, async |c| {
            c.query(sql, params)
                .await
                .map_err(|e| self.redact().io(what, &e))
        })
        .await
    }

    /// One statement's count of rows changed.
    pub(crate) async fn execute(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.run(what, async |c| {
            c.execute(sql, params)
                .await
                .map_err(|e| self.redact().io(what, &e))
        })
        .await
    }

    /// Run `f` on a connection, connecting included, within `limit`. On
    /// timeout the connection is dropped with the future; otherwise it is
    /// kept unless it closed.
    pub(crate) async fn run_within<T>(
        &self,
        what: &str,
        limit: Duration,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let work = async {
            let idle = loop {
                let c = self.idle().pop();
                match c {
                    Some(c) if c.client.is_closed() => continue,
                    other => break other,
                }
            };
            let mut conn = match idle {
                Some(c) => c,
                None => self.connector.connect().await?,
            };
            let result = f(&mut conn.client).await;
            if !conn.client.is_closed() {
                let mut idle = self.idle();
                if idle.len() < KEEP_IDLE {
                    idle.push(conn);
                }
            }
            result
        };
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Io(format!(
                "{what}: PostgreSQL did not answer within {limit:?} (the connection is dropped)"
            ))),
        }
    }
}
