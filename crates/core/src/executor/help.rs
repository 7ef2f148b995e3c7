//! Help text: the ops a principal may run, and one op described.

use super::{Executor, Loaded};
use crate::catalog::{LockMode, OpSpec};
use crate::error::Result;
use crate::grammar;
use crate::model::{Actor, Origin};
use crate::policy::{Place, Policy};

impl Executor {
    /// Help for `actor` at `origin`: only the ops they may run there.
    pub fn help(&self, actor: &Actor, origin: &Origin, op: Option<&str>) -> Result<String> {
        let principal = self.principal_of(actor)?;
        let loaded = self.loaded();
        let place = Place {
            frontend: &origin.frontend,
            location: &origin.location,
        };
        let visible = loaded
            .policy
            .visible_ops(&principal, &loaded.catalog, place);
        if let Some(name) = op {
            let Some(spec) = visible.iter().find(|o| o.name == name) else {
                let hint = grammar::suggest(name, visible.iter().map(|o| o.name.as_str()))
                    .map(|s| format!(" Did you mean `{s}`?"))
                    .unwrap_or_default();
                return Ok(format!("`{name}` is not an op you may run here.{hint}"));
            };
            return Ok(describe_op(&loaded, spec));
        }
        if visible.is_empty() {
            return Ok(format!("`{principal}` may not run any op here."));
        }
        let mut s = String::from("Ops you may run here:\n");
        for o in &visible {
            s.push_str(&format!("  {}", o.usage()));
            if !o.description.is_empty() {
                s.push_str(&format!("  — {}", o.description));
            }
            if o.approvals > 0 {
                s.push_str(&format!(
                    " (needs {} approval{})",
                    o.approvals,
                    if o.approvals == 1 { "" } else { "s" }
                ));
            }
            s.push('\n');
        }
        s.push_str("Add --dry-run to see what would run. Also: help OP, status ID, approve ID, deny ID [reason], cancel ID, retry ID");
        Ok(s)
    }
}

pub(super) fn approvers_text(policy: &Policy, op: &OpSpec) -> String {
    let roles = if op.approvers.is_empty() {
        policy.roles_for(op)
    } else {
        op.approvers.clone()
    };
    if roles.is_empty() {
        "nobody (no role may approve it)".into()
    } else {
        format!("role {} (not the requester)", roles.join(" or "))
    }
}

fn describe_op(loaded: &Loaded, op: &OpSpec) -> String {
    let mut s = format!("{}\n", op.usage());
    if !op.description.is_empty() {
        s.push_str(&format!("{}\n", op.description));
    }
    for p in &op.params {
        s.push_str(&format!(
            "  {} ({}{}){}{}\n",
            p.name,
            p.type_hint(),
            if p.is_required() { ", required" } else { "" },
            p.default
                .as_ref()
                .map(|d| format!(", default {d}"))
                .unwrap_or_default(),
            if p.description.is_empty() {
                String::new()
            } else {
                format!(": {}", p.description)
            }
        ));
    }
    if op.approvals > 0 {
        s.push_str(&format!(
            "Needs {} approval(s) from {}.\n",
            op.approvals,
            approvers_text(&loaded.policy, op)
        ));
    }
    if let Some(l) = &op.lock {
        s.push_str(&format!(
            "Lock: `{l}` ({} when held).\n",
            match op.lock_mode {
                LockMode::Queue => "queues",
                LockMode::Refuse => "refuses",
            }
        ));
    }
    s.push_str(&format!(
        "Timeout: {}.",
        op.timeout.unwrap_or(loaded.settings.default_timeout)
    ));
    s
}
