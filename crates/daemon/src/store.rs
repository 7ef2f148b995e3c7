//! The daemon's store factory: `[store]` picks the backend, and `youops
//! serve`, the local CLI and `youops store` open it the same way.
//!
//! The store is `YOUOPS_STORE_URL` when that is set, else `[store] url`, else
//! the embedded log store (`youops-store`) in `[store] path`, with its options
//! from `[store]`. A relative path resolves against the config's directory.
//!
//! # STORE
//!
//! `[store] url`, `YOUOPS_STORE_URL` and every command that names a store
//! take one of these ([`StoreLocation`]):
//!
//! | STORE | the store |
//! |---|---|
//! | `PATH`, or `log:PATH` | the log store (`youops-store`) in directory `PATH`: what `[store] path` names |
//! | `sled:PATH` | a sled store in directory `PATH` (stores of YouOps before the log store); only in a build with `--features sled` |
//! | `postgres://…`, `postgresql://…` | the PostgreSQL store of a cluster (`youops-store-postgres`; `?host=/dir` for a Unix socket, `sslmode=require` for TLS); only in a build with the `postgres` feature (a default) |
//!
//! A plain path is always a log store directory, even when it contains a `:`
//! (`log:` forces it for a path that starts with `sled:`). Any other
//! `scheme://` is refused.
//!
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use youops_core::audit::{AuditStore, StoreError};
use youops_core::config::{Config, StoreUrl};
use youops_store::{LogOptions, LogStore};

/// The environment variable that names the store, over `[store] url`.
pub const STORE_URL_ENV: &str = "YOUOPS_STORE_URL";

/// redb's page cache of the store's indexes. Requests are read mostly while
/// they are recent (and then from memory), so a small cache serves a daemon;
/// redb's default (64 MiB) would be most of its memory.
const INDEX_CACHE_BYTES: usize = 16 << 20;

/// The smallest `[store] segment_size` accepted (small segments suit tests;
/// a busy daemon wants the default).
pub const MIN_SEGMENT_BYTES: u64 = 4 << 10;

/// Where a store is (the STORE syntax: see the [module](self) documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreLocation {
    /// The log store in this directory.
    Log(PathBuf),
    /// A sled store in this directory (only usable with the `sled` feature).
    Sled(PathBuf),
    /// A PostgreSQL store (only usable with the `postgres` feature); shown
    /// with its password masked.
    Postgres(StoreUrl),
}

impl FromStr for StoreLocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let path = |p: &str, what: &str| {
            if p.is_empty() {
                Err(format!("`{s}` names no {what} directory"))
            } else {
                Ok(PathBuf::from(p))
            }
        };
        if let Some(p) = s.strip_prefix("log:") {
            return path(p, "log store").map(StoreLocation::Log);
        }
        if let Some(p) = s.strip_prefix("sled:") {
            if !cfg!(feature = "sled") {
                return Err(format!(
                    "`{s}` is a sled store, and this youops was built without sled: build it \
                     with `cargo build --release -p youops --features sled`"
                ));
            }
            return path(p, "sled store").map(StoreLocation::Sled);
        }
        if let Some((scheme, _)) = s.split_once("://") {
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            {
                return match scheme {
                    "postgres" | "postgresql" => postgres(s),
                    _ => Err(format!(
                        "`{scheme}://…` is no store this youops knows: a STORE is a log store \
                         directory (PATH or log:PATH), sled:PATH or postgres://…"
                    )),
                };
            }
        }
        path(s, "log store").map(StoreLocation::Log)
    }
}

/// A `postgres://` STORE, checked (the error never repeats the URL, which
/// may hold a password).
#[cfg(feature = "postgres")]
fn postgres(s: &str) -> Result<StoreLocation, String> {
    youops_store_postgres::PgUrl::parse(s)
        .map(|_| StoreLocation::Postgres(StoreUrl::new(s)))
        .map_err(|e| format!("a PostgreSQL URL that does not parse: {e}"))
}

#[cfg(not(feature = "postgres"))]
fn postgres(_: &str) -> Result<StoreLocation, String> {
    Err(
        "`postgres://…` is a PostgreSQL store, and this youops was built without it (not \
         compiled in): build it with the default features or `--features postgres`"
            .into(),
    )
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Log(p) => write!(f, "{}", p.display()),
            StoreLocation::Sled(p) => write!(f, "sled:{}", p.display()),
            StoreLocation::Postgres(u) => write!(f, "{u}"),
        }
    }
}

/// The log store's options from `[store]`.
pub fn options(cfg: &Config) -> LogOptions {
    let mut o = LogOptions::default();
    o.segment_bytes = cfg.store.segment_size.0.max(MIN_SEGMENT_BYTES);
    o.dedup_ttl = cfg.store.dedup_ttl.0;
    o.index_cache_bytes = INDEX_CACHE_BYTES;
    o
}

/// Where the store of `cfg` is: `YOUOPS_STORE_URL`, else `[store] url`, else
/// the log store at `[store] path`.
pub fn location(cfg: &Config) -> Result<StoreLocation, String> {
    let from_env = std::env::var(STORE_URL_ENV).ok().filter(|u| !u.is_empty());
    let (named, source) = match (&from_env, &cfg.store.url) {
        (Some(u), _) => (u.as_str(), STORE_URL_ENV),
        (None, Some(u)) => (u.expose(), "store.url"),
        (None, None) => return Ok(StoreLocation::Log(cfg.store_path())),
    };
    let resolve = |p: PathBuf| {
        if p.is_relative() {
            cfg.base_dir.join(p)
        } else {
            p
        }
    };
    match named.parse::<StoreLocation>() {
        Ok(StoreLocation::Log(p)) => Ok(StoreLocation::Log(resolve(p))),
        Ok(StoreLocation::Sled(p)) => Ok(StoreLocation::Sled(resolve(p))),
        Ok(pg) => Ok(pg),
        Err(e) => Err(format!("{source}: {e}")),
    }
}

/// Problems with `[store]` that the config's types do not catch.
pub fn check(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    match location(cfg) {
        Err(e) => out.push(e),
        Ok(StoreLocation::Postgres(_))
            if crate::server_config::ServerConfig::of_checked(cfg)
                .node_id
                .is_none() =>
        {
            out.push(
                "server.node_id: a daemon on a shared PostgreSQL store is a node of a cluster \
                 and needs a stable node id (`node_id = \"node-1\"`)"
                    .into(),
            )
        }
        Ok(_) => {}
    }
    if cfg.store.segment_size.0 < MIN_SEGMENT_BYTES {
        out.push(format!(
            "store.segment_size: {} bytes is below the smallest segment, 4KiB",
            cfg.store.segment_size.0
        ));
    }
    if cfg.store.dedup_ttl.0 < std::time::Duration::from_secs(60) {
        out.push(format!(
            "store.dedup_ttl: {} is under a minute; senders redeliver for days (GitHub for 3)",
            cfg.store.dedup_ttl
        ));
    }
    out
}

/// Open the store of `cfg` (see the [module](self) documentation), creating
/// the log store's directory.
pub async fn open(cfg: &Config) -> Result<Arc<dyn AuditStore>, StoreError> {
    match location(cfg).map_err(StoreError::Io)? {
        StoreLocation::Log(path) => open_log(&path, options(cfg)),
        StoreLocation::Postgres(url) => open_postgres(&url, cfg).await,
        StoreLocation::Sled(path) => Err(StoreError::Io(format!(
            "sled:{}: the daemon keeps its chain in a log store; copy this one into a new \
             log store with `youops store copy --from sled:{} --to NEW_DIR` and name that",
            path.display(),
            path.display()
        ))),
    }
}

/// Open the PostgreSQL store at `url` (its schema is migrated on open).
#[cfg(feature = "postgres")]
pub async fn open_postgres(
    url: &StoreUrl,
    cfg: &Config,
) -> Result<Arc<dyn AuditStore>, StoreError> {
    let mut opts = youops_store_postgres::PgOptions::default();
    opts.dedup_ttl = cfg.store.dedup_ttl.0;
    let store = youops_store_postgres::PgStore::open(url.expose(), opts).await?;
    Ok(Arc::new(store))
}

/// A PostgreSQL store needs the `postgres` feature.
#[cfg(not(feature = "postgres"))]
pub async fn open_postgres(url: &StoreUrl, _: &Config) -> Result<Arc<dyn AuditStore>, StoreError> {
    Err(StoreError::Io(format!(
        "{url}: this youops was built without the `postgres` feature"
    )))
}

/// Open (or create) the log store in `path`.
fn open_log(path: &Path, opts: LogOptions) -> Result<Arc<dyn AuditStore>, StoreError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::Io(format!("creating {}: {e}", parent.display())))?;
    }
    Ok(Arc::new(LogStore::open(path, opts)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_syntax() {
        let log = |p: &str| Ok(StoreLocation::Log(PathBuf::from(p)));
        assert_eq!(
            "/var/lib/youops/store".parse(),
            log("/var/lib/youops/store")
        );
        assert_eq!("data/st:ore".parse(), log("data/st:ore"));
        assert_eq!("log:sled:odd".parse(), log("sled:odd"));
        let sled = "sled:/var/lib/youops/store".parse::<StoreLocation>();
        if cfg!(feature = "sled") {
            assert_eq!(
                sled,
                Ok(StoreLocation::Sled(PathBuf::from("/var/lib/youops/store")))
            );
            assert_eq!(sled.unwrap().to_string(), "sled:/var/lib/youops/store");
        } else {
            let e = sled.unwrap_err();
            assert!(e.contains("--features sled"), "{e}");
        }
        let pg = "postgres://app:s3cret@db.example/youops".parse::<StoreLocation>();
        if cfg!(feature = "postgres") {
            let pg = pg.unwrap();
            assert!(matches!(pg, StoreLocation::Postgres(_)), "{pg:?}");
            assert_eq!(pg.to_string(), "postgres://app:***@db.example/youops");
            assert!(!format!("{pg:?}").contains("s3cret"));
            let bad = "postgresql://app@db/youops?sslmode=sometimes"
                .parse::<StoreLocation>()
                .unwrap_err();
            assert!(bad.contains("does not parse"), "{bad}");
        } else {
            let e = pg.unwrap_err();
            assert!(
                e.contains("not compiled in") && !e.contains("s3cret"),
                "{e}"
            );
        }
        assert!("s3://bucket/x".parse::<StoreLocation>().is_err());
        assert!("".parse::<StoreLocation>().is_err());
        assert!("log:".parse::<StoreLocation>().is_err());
    }

    #[test]
    fn the_config_names_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let load = |store: &str| {
            let text = format!("[store]\n{store}\n");
            Config::parse(&text, dir.path(), "test", &|_| None).unwrap()
        };
        assert_eq!(
            location(&load("path = \"data\"")),
            Ok(StoreLocation::Log(dir.path().join("data")))
        );
        assert_eq!(
            location(&load("path = \"data\"\nurl = \"log:other\"")),
            Ok(StoreLocation::Log(dir.path().join("other")))
        );
        let e = location(&load("url = \"s3://bucket/x\"")).unwrap_err();
        assert!(e.starts_with("store.url: "), "{e}");
        let cfg = load("url = \"postgres://app:s3cret@db/youops\"");
        let problems = check(&cfg).join("\n");
        let expected = if cfg!(feature = "postgres") {
            "server.node_id"
        } else {
            "store.url"
        };
        assert!(problems.contains(expected), "{problems}");
        assert!(!problems.contains("s3cret"), "{problems}");
    }
}
