//! How requests look in chat: status lines, results, approval prompts. Pure
//! functions of a [`RequestRecord`], so every adapter renders the same facts.

use youops_core::{Actor, RequestRecord, State};

use crate::chat::adapter::{ActionKind, Button, ChatAdapter, ChatMessage};

/// The button value: `<request id>:<digest>`; the digest binds the click to the
/// exact content shown.
pub fn button_value(rec: &RequestRecord) -> String {
    format!("{}:{}", rec.request.id, rec.request.digest)
}

/// Split a button value into request id and digest.
pub fn parse_button_value(v: &str) -> Option<(&str, &str)> {
    let (id, digest) = v.split_once(':')?;
    (!id.is_empty() && !digest.is_empty()).then_some((id, digest))
}

fn args_text(rec: &RequestRecord) -> String {
    let mut s = String::new();
    for (k, v) in &rec.request.args {
        s.push_str(&format!(" {k}={}", quote(&v.as_text())));
    }
    if rec.request.dry_run {
        s.push_str(" --dry-run");
    }
    s
}

fn quote(v: &str) -> String {
    if !v.is_empty() && !v.chars().any(|c| c.is_whitespace() || c == '"' || c == '`') {
        v.to_string()
    } else {
        format!(
            "\"{}\"",
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('`', "'")
        )
    }
}

fn icon(state: State) -> &'static str {
    match state {
        State::Received | State::Approved => ":hourglass_flowing_sand:",
        State::PendingApproval => ":raised_hand:",
        State::Running => ":gear:",
        State::Succeeded => ":white_check_mark:",
        State::Failed | State::TimedOut | State::Interrupted => ":x:",
        State::Invalid | State::Denied | State::Rejected | State::Expired | State::Cancelled => {
            ":no_entry_sign:"
        }
    }
}

fn who(ad: &dyn ChatAdapter, a: &youops_core::Actor, frontend: &str) -> String {
    if a.frontend == frontend {
        ad.mention(&a.external_id)
    } else {
        a.principal
            .clone()
            .unwrap_or_else(|| format!("{}:{}", a.frontend, a.external_id))
    }
}

fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// `1 approval`, `2 approvals`.
fn approvals_text(n: u32) -> String {
    more_approvals_text(n, "")
}

/// `1 more approval`, `2 more approvals` (`more`: `"more "`, or `""`).
fn more_approvals_text(n: u32, more: &str) -> String {
    if n == 1 {
        format!("1 {more}approval")
    } else {
        format!("{n} {more}approvals")
    }
}

/// Whether a request still waits for approvals, so its prompt keeps its buttons.
///
/// The record folded right after the approval (or denial) that decided a
/// request is still `pending_approval`, with no approval outstanding (or a
/// denial given): the `approved` (`rejected`) transition follows in the same
/// commit, so such a record counts as decided. A pending record that never
/// recorded its count (and has no approval yet) still waits.
pub fn awaits_approval(rec: &RequestRecord) -> bool {
    rec.state == State::PendingApproval
        && !rec.approvals.iter().any(|a| !a.approve)
        && (rec.approvals_needed > 0 || !rec.approvals.iter().any(|a| a.approve))
}

/// The approvers so far, as shown in chat.
fn approvers(ad: &dyn ChatAdapter, frontend: &str, rec: &RequestRecord) -> Vec<String> {
    rec.approvals
        .iter()
        .filter(|a| a.approve)
        .map(|a| who(ad, &a.by, frontend))
        .collect()
}

/// What is still needed while pending, e.g. `needs 2 approvals from role ops
/// (not the requester)` or `needs 1 more approval from ...`, from the live
/// count (the executor's reason gives the count at submission, with
/// `approval(s)`). `None` when nothing is outstanding.
pub fn pending_text(rec: &RequestRecord) -> Option<String> {
    if !awaits_approval(rec) {
        return None;
    }
    let n = rec.approvals_needed;
    let from = rec
        .reason
        .as_deref()
        .and_then(|r| r.strip_prefix("needs "))
        .and_then(|r| r.split_once(" approval(s) from "))
        .map(|(_, from)| format!(" from {from}"))
        .unwrap_or_default();
    let given = rec.approvals.iter().any(|a| a.approve);
    Some(match (n, given) {
        (0, _) => format!("needs approval{from}"),
        (n, false) => format!("needs {}{from}", approvals_text(n)),
        (n, true) => format!("needs {}{from}", more_approvals_text(n, "more ")),
    })
}

/// The one-line status of a request, updated in place as it moves.
pub fn status(
    ad: &dyn ChatAdapter,
    frontend: &str,
    rec: &RequestRecord,
    link: Option<&str>,
) -> ChatMessage {
    let r = &rec.request;
    let mut s = format!(
        "{} `{}{}` by {} — request `{}` — state: `{}`",
        icon(rec.state),
        r.op,
        args_text(rec),
        who(ad, &r.actor, frontend),
        r.id,
        rec.state
    );
    // A reason that only says who moved it to this state (`approved by bob` in
    // state `approved`) goes on the state's line rather than repeating the state.
    let mut reason = rec.reason.clone().filter(|_| rec.state != State::Succeeded);
    if rec.state == State::PendingApproval {
        reason = pending_text(rec).or(reason);
    }
    if let Some(by) = reason
        .as_deref()
        .and_then(|x| x.strip_prefix(rec.state.as_str()))
        .filter(|rest| rest.starts_with(" by "))
    {
        s.push_str(by);
        reason = None;
    }
    if let Some(ms) = rec.duration_ms() {
        if rec.state.is_terminal() {
            s.push_str(&format!(" after {}", duration(ms)));
        }
    }
    if let Some(reason) = reason {
        s.push_str(&format!("\n_{}_", reason.replace('_', "\\_")));
    }
    if let Some(l) = link {
        s.push_str(&format!("\n{}", ad.link(l, "details on the dashboard")));
    }
    ChatMessage::text(s)
}

/// The final result, posted in the thread: state, duration and output. Output
/// longer than the adapter allows shows its head and tail with a link to the
/// full output.
pub fn result(
    ad: &dyn ChatAdapter,
    frontend: &str,
    rec: &RequestRecord,
    link: Option<&str>,
) -> ChatMessage {
    let r = &rec.request;
    let mut head = format!(
        "{} `{}` request `{}` — state: `{}`",
        icon(rec.state),
        r.op,
        r.id,
        rec.state
    );
    if let Some(ms) = rec.duration_ms() {
        head.push_str(&format!(" — duration {}", duration(ms)));
    }
    if let Some(o) = &rec.outcome {
        if let Some(code) = o.exit_code {
            head.push_str(&format!(" — exit code {code}"));
        }
    }
    if let Some(reason) = &rec.reason {
        if rec.state != State::Succeeded {
            head.push_str(&format!("\n_{}_", reason.replace('_', "\\_")));
        }
    }
    let _ = frontend;
    let output = rec
        .outcome
        .as_ref()
        .map(|o| o.output.as_str())
        .unwrap_or("");
    let capped_by_executor = rec
        .outcome
        .as_ref()
        .map(|o| o.output_truncated_bytes)
        .unwrap_or(0);
    let link_text = link
        .map(|l| ad.link(l, "full output on the dashboard"))
        .unwrap_or_else(|| {
            "full output: `youops audit list --request ".to_string() + &r.id.to_string() + "`"
        });
    let mut body = String::new();
    if !output.is_empty() {
        // Budget: the adapter's limit minus the header, fences and notes.
        let budget = ad
            .max_text_len()
            .saturating_sub(head.chars().count() + link_text.chars().count() + 200)
            .max(200);
        let clean = output.replace("```", "ʼʼʼ");
        let n = clean.chars().count();
        if n <= budget {
            body = format!("\n```\n{}\n```", clean.trim_end_matches('\n'));
        } else {
            let half = budget / 2;
            let head_part: String = clean.chars().take(half).collect();
            let tail_part: String = clean.chars().skip(n - half).collect();
            body = format!(
                "\n```\n{}\n```\n… {} characters omitted …\n```\n{}\n```\n{}",
                head_part.trim_end_matches('\n'),
                n - 2 * half,
                tail_part.trim_end_matches('\n'),
                link_text
            );
        }
    }
    if capped_by_executor > 0 {
        body.push_str(&format!(
            "\n(the executor kept the first part of the output; {capped_by_executor} bytes beyond its output limit were dropped)"
        ));
    }
    ChatMessage::text(format!("{head}{body}"))
}

/// The approval prompt, updated in place: while approvals are outstanding it
/// says how many (`Needs 2 approvals`, then `Approved by @bob; needs 1 more
/// approval`) and carries Approve / Deny buttons; once none are (approved,
/// denied, expired, cancelled, ...) it says what happened, without buttons.
pub fn approval(
    ad: &dyn ChatAdapter,
    frontend: &str,
    rec: &RequestRecord,
    link: Option<&str>,
) -> ChatMessage {
    let r = &rec.request;
    let mut s = format!(
        ":raised_hand: *Approval* for `{}{}` requested by {} (via {}) — request `{}`",
        r.op,
        args_text(rec),
        who(ad, &r.actor, frontend),
        r.origin.frontend,
        r.id,
    );
    let approvers = approvers(ad, frontend, rec);
    let denial = rec.approvals.iter().rev().find(|a| !a.approve);
    let mut buttons = Vec::new();
    match rec.state {
        State::PendingApproval if awaits_approval(rec) => {
            s.push('\n');
            if !approvers.is_empty() {
                s.push_str(&format!("Approved by {}; ", approvers.join(", ")));
            }
            let n = rec.approvals_needed;
            s.push_str(&match (n, approvers.is_empty()) {
                (0, _) => "Needs approval".to_string(),
                (n, true) => format!("Needs {}", approvals_text(n)),
                (n, false) => format!("needs {}", more_approvals_text(n, "more ")),
            });
            if let Some(exp) = rec.expires_at {
                s.push_str(&format!(
                    "; expires <!date^{}^{{date_short_pretty}} {{time}}|{}>",
                    exp.timestamp(),
                    exp.to_rfc3339()
                ));
            }
            buttons = vec![
                Button {
                    kind: ActionKind::Approve,
                    label: "Approve".into(),
                    value: button_value(rec),
                },
                Button {
                    kind: ActionKind::Deny,
                    label: "Deny".into(),
                    value: button_value(rec),
                },
            ];
        }
        State::Rejected | State::PendingApproval
            if denial.is_some() || rec.state == State::Rejected =>
        {
            let (by, why) = match denial {
                Some(a) => (who(ad, &a.by, frontend), a.reason.as_deref()),
                None => ("an approver".to_string(), None),
            };
            s.push_str(&format!("\n:no_entry_sign: Denied by {by}"));
            if let Some(why) = why.filter(|w| !w.trim().is_empty()) {
                s.push_str(&format!(": {why}"));
            }
        }
        State::PendingApproval
        | State::Approved
        | State::Running
        | State::Succeeded
        | State::Failed
        | State::TimedOut => {
            if approvers.is_empty() {
                s.push_str("\n:white_check_mark: Approved");
            } else {
                s.push_str(&format!(
                    "\n:white_check_mark: Approved by {}",
                    approvers.join(", ")
                ));
            }
        }
        State::Expired => s.push_str("\n:hourglass: Expired: approvals did not arrive in time"),
        State::Cancelled => {
            s.push_str("\n:no_entry_sign: ");
            s.push_str(&cancelled_text(rec));
        }
        State::Interrupted => {
            s.push_str("\n:x: Interrupted");
            if let Some(why) = &rec.reason {
                s.push_str(&format!(": {why}"));
            }
        }
        other => s.push_str(&format!("\nNo longer pending (state `{other}`)")),
    }
    if let Some(l) = link {
        s.push_str(&format!("\n{}", ad.link(l, "details on the dashboard")));
    }
    ChatMessage { text: s, buttons }
}

/// `Cancelled by alice`, `Cancelled: voided: ...`, from the cancellation's reason.
fn cancelled_text(rec: &RequestRecord) -> String {
    match rec.reason.as_deref() {
        Some(r) => match r.strip_prefix("cancelled") {
            Some(rest) => format!("Cancelled{rest}"),
            None => format!("Cancelled: {r}"),
        },
        None => "Cancelled".into(),
    }
}

/// A typed command that decides about a request, for [`decision_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// `approve ID`.
    Approve,
    /// `deny ID [reason]`.
    Deny,
    /// `cancel ID`.
    Cancel,
}

/// The reply to `approve`, `deny` or `cancel` by `by`, from the record the
/// executor returned: what the command did and where that leaves the request,
/// said once (`Approved by @bob; request `01J…` (`deploy`) is starting.`,
/// `Approved by @bob (1 of 2 approvals); request … needs 1 more approval …`,
/// `Denied by @bob; request … will not run.`).
pub fn decision_reply(
    ad: &dyn ChatAdapter,
    frontend: &str,
    did: Decision,
    by: &Actor,
    rec: &RequestRecord,
    link: Option<&str>,
) -> ChatMessage {
    let r = &rec.request;
    let req = format!("request `{}` (`{}`)", r.id, r.op);
    let by = who(ad, by, frontend);
    // `failed` (why), for a request that ended before the reply.
    let end = match rec
        .reason
        .as_deref()
        .filter(|_| rec.state != State::Succeeded)
    {
        Some(why) => format!("`{}` ({why})", rec.state),
        None => format!("`{}`", rec.state),
    };
    let mut s = match (did, rec.state) {
        (Decision::Approve, State::PendingApproval) => {
            let given = rec.approvals.iter().filter(|a| a.approve).count() as u32;
            let total = given + rec.approvals_needed;
            let mut s = format!(
                ":white_check_mark: Approved by {by} ({given} of {})",
                approvals_text(total)
            );
            match pending_text(rec) {
                Some(p) => s.push_str(&format!("; {req} {p}.")),
                None => s.push('.'),
            }
            s
        }
        (Decision::Approve, State::Approved) => {
            format!(":white_check_mark: Approved by {by}; {req} is starting.")
        }
        (Decision::Approve, State::Running) => {
            format!(":white_check_mark: Approved by {by}; {req} is now running.")
        }
        (Decision::Approve, st) if st.is_terminal() => {
            format!(":white_check_mark: Approved by {by}, but {req} ended {end}.")
        }
        (Decision::Deny, State::Rejected) => {
            let mut s = format!(":no_entry_sign: Denied by {by}");
            let why = rec
                .approvals
                .iter()
                .rev()
                .find(|a| !a.approve)
                .and_then(|a| a.reason.as_deref())
                .filter(|w| !w.trim().is_empty());
            if let Some(why) = why {
                s.push_str(&format!(" ({why})"));
            }
            s.push_str(&format!("; {req} will not run."));
            s
        }
        (Decision::Cancel, State::Cancelled) => match rec.duration_ms() {
            Some(ms) => format!(
                ":no_entry_sign: Cancelled by {by}; {req} was stopped after {}.",
                duration(ms)
            ),
            None => format!(":no_entry_sign: Cancelled by {by}; {req} will not run."),
        },
        (Decision::Cancel, st) if st.is_terminal() => {
            format!(":information_source: Too late to cancel: {req} ended {end} first.")
        }
        // Not a state these commands leave a request in: show its status line.
        _ => return status(ad, frontend, rec, link),
    };
    if let Some(l) = link {
        s.push_str(&format!("\n{}", ad.link(l, "follow it on the dashboard")));
    }
    ChatMessage::text(s)
}

#[cfg(test)]
mod tests;
