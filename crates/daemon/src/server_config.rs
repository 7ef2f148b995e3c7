//! `[server]`: the daemon's HTTP side. Core keeps the section as written (with
//! `${VAR}` expanded and its lines); the daemon reads and checks it here.

use std::path::Path;

use serde::{Deserialize, Serialize};
use youops_core::config::{Config, ConfigErrors, ConfigIssue};
use youops_core::units::{ByteSize, HumanDuration};

/// The environment variable that names this node, over `[server] node_id`
/// (one config file for every node of a cluster).
pub const NODE_ID_ENV: &str = "YOUOPS_NODE_ID";

/// `[server]`: the daemon's HTTP side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Listen address.
    pub listen: String,
    /// Public base URL (for links in chat and issues, and the Slack manifest).
    pub public_url: Option<String>,
    /// Largest accepted request body.
    pub body_limit: ByteSize,
    /// Per-HTTP-request timeout.
    pub request_timeout: HumanDuration,
    /// How long running ops may take to finish on shutdown before they are interrupted.
    pub shutdown_grace: HumanDuration,
    /// Emit logs as JSON.
    pub log_json: bool,
    /// This daemon's stable name in a cluster (several daemons on one
    /// PostgreSQL store): recorded on the requests it receives and runs,
    /// the owner of its locks and heartbeats. Required with a shared store;
    /// keep it across restarts and upgrades. `YOUOPS_NODE_ID` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<youops_core::cluster::NodeId>,
    /// In a cluster, how long the leader lease holds without a renewal: a
    /// new leader takes over within about this long after the leader
    /// stops, and a node whose heartbeats stop for this long is declared
    /// dead.
    pub lease_ttl: HumanDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            body_limit: ByteSize(1 << 20),
            request_timeout: HumanDuration(std::time::Duration::from_secs(30)),
            shutdown_grace: HumanDuration(std::time::Duration::from_secs(30)),
            log_json: false,
            node_id: None,
            lease_ttl: HumanDuration(std::time::Duration::from_secs(10)),
        }
    }
}

impl ServerConfig {
    /// The `[server]` of `cfg` (the defaults when it has none), or its
    /// problems, placed on their lines.
    pub fn of(cfg: &Config) -> Result<ServerConfig, Vec<ConfigIssue>> {
        let mut server = match cfg.server.clone() {
            None => ServerConfig::default(),
            Some(v) => v.try_into::<ServerConfig>().map_err(|e| {
                vec![ConfigIssue {
                    line: cfg.line_of("server"),
                    path: "server".into(),
                    message: e.to_string().trim().to_string(),
                }]
            })?,
        };
        if let Some(id) = std::env::var(NODE_ID_ENV).ok().filter(|v| !v.is_empty()) {
            server.node_id = Some(youops_core::cluster::NodeId::new(id).map_err(|message| {
                vec![ConfigIssue {
                    line: None,
                    path: NODE_ID_ENV.into(),
                    message,
                }]
            })?);
        }
        if server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(vec![ConfigIssue {
                line: None,
                path: "server.listen".into(),
                message: format!("`{}` is not an address like 127.0.0.1:8080", server.listen),
            }]);
        }
        // Op lock leases renew a second before they expire: a shorter TTL
        // leaves them no time.
        if server.lease_ttl.0 < std::time::Duration::from_secs(2) {
            return Err(vec![ConfigIssue {
                line: cfg.line_of("server.lease_ttl"),
                path: "server.lease_ttl".into(),
                message: format!("{} is under two seconds", server.lease_ttl),
            }]);
        }
        Ok(server)
    }

    /// [`ServerConfig::of`] a config already checked with [`check`] (the
    /// defaults if it was not, and is bad).
    pub fn of_checked(cfg: &Config) -> ServerConfig {
        Self::of(cfg).unwrap_or_default()
    }
}

/// The problems of the `[server]` of `cfg`: the check to pass to
/// [`Config::load_with`].
pub fn check(cfg: &Config) -> Vec<ConfigIssue> {
    ServerConfig::of(cfg).err().unwrap_or_default()
}

/// Read and validate the config file at `path` for the daemon: core's
/// checks and those of `[server]`, every problem at once.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    Config::load_with(path, &check)
}

#[cfg(test)]
mod tests;
