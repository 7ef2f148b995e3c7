//! How requests look in chat: status lines, results, approval prompts. Pure
//! functions of a [`RequestRecord`], so every adapter renders the same facts.

use youops_core::{RequestRecord, State};

use crate::adapter::{ActionKind, Button, ChatAdapter, ChatMessage};

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
    if let Some(ms) = rec.duration_ms() {
        if rec.state.is_terminal() {
            s.push_str(&format!(" after {}", duration(ms)));
        }
    }
    if let Some(reason) = &rec.reason {
        if !rec.state.is_terminal() || rec.state != State::Succeeded {
            s.push_str(&format!("\n_{}_", reason.replace('_', "\\_")));
        }
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

/// The approval prompt (with buttons while pending) or the decision, updated in place.
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
    let approvers: Vec<String> = rec
        .approvals
        .iter()
        .filter(|a| a.approve)
        .map(|a| who(ad, &a.by, frontend))
        .collect();
    let mut buttons = Vec::new();
    match rec.state {
        State::PendingApproval => {
            s.push_str(&format!(
                "\nNeeds {} approval(s){}",
                rec.approvals_needed,
                if approvers.is_empty() {
                    String::new()
                } else {
                    format!("; approved so far by {}", approvers.join(", "))
                }
            ));
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
        State::Rejected => {
            let by = rec
                .approvals
                .iter()
                .rev()
                .find(|a| !a.approve)
                .map(|a| who(ad, &a.by, frontend))
                .unwrap_or_else(|| "an approver".into());
            s.push_str(&format!("\n:no_entry_sign: Denied by {by}"));
        }
        State::Expired => s.push_str("\n:hourglass: Expired: approvals did not arrive in time"),
        State::Cancelled => s.push_str("\n:no_entry_sign: Cancelled"),
        _ if !approvers.is_empty() => {
            s.push_str(&format!(
                "\n:white_check_mark: Approved by {}",
                approvers.join(", ")
            ));
        }
        other => s.push_str(&format!("\nNo longer pending (state `{other}`)")),
    }
    if let Some(l) = link {
        s.push_str(&format!("\n{}", ad.link(l, "details on the dashboard")));
    }
    ChatMessage { text: s, buttons }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn button_values_round_trip() {
        assert_eq!(
            parse_button_value("01ABC:deadbeef"),
            Some(("01ABC", "deadbeef"))
        );
        assert_eq!(parse_button_value("01ABC"), None);
        assert_eq!(parse_button_value(":x"), None);
        assert_eq!(parse_button_value("x:"), None);
    }

    #[test]
    fn quoting_keeps_values_readable() {
        assert_eq!(quote("prod"), "prod");
        assert_eq!(quote("two words"), "\"two words\"");
        assert_eq!(quote(""), "\"\"");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(12), "12 ms");
        assert_eq!(duration(1500), "1.5 s");
        assert_eq!(duration(185_000), "3m05s");
    }
}
