//! Which built-in frontends a config enables, and their config checks.

use youops_core::config::Config;
use youops_core::frontend::Frontends;

/// Frontend sections this build knows.
pub const KNOWN: [&str; 0] = [];

/// Every problem with the `[frontends.*]` sections.
pub fn check(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for name in cfg.frontends.keys() {
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

/// Build the frontends the config enables.
pub fn build(cfg: &Config) -> Result<Frontends, Vec<String>> {
    let problems = check(cfg);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Frontends::new())
}
