//! Which built-in frontends a config enables, and their config checks.
//!
//! A frontend is enabled by the presence of its `[frontends.NAME]` section.
//! Embedders that register their own frontends pass their section names as
//! `extra`, so those sections are left for them to check.

use youops_core::config::Config;
use youops_core::frontend::Frontends;

/// Frontend sections this build knows.
pub const KNOWN: [&str; 0] = [];

/// Every problem with the `[frontends.*]` sections, except those named in `extra`.
pub fn check(cfg: &Config, extra: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for name in cfg.frontends.keys() {
        if extra.contains(&name.as_str()) {
            continue;
        }
        if !KNOWN.contains(&name.as_str()) {
            out.push(format!(
                "frontends.{name}: unknown frontend (this build has: {})",
                if KNOWN.is_empty() {
                    "none".to_string()
                } else {
                    KNOWN.join(", ")
                }
            ));
        }
    }
    out
}

/// Build the built-in frontends the config enables.
pub fn build(cfg: &Config, extra: &[&str]) -> Result<Frontends, Vec<String>> {
    let problems = check(cfg, extra);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Frontends::new())
}
