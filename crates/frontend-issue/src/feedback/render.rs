//! The markdown of the comments YouOps writes on an issue: the status comment
//! of a request, and the comment for a form that could not be read.

use youops_core::model::{RequestRecord, State};

use super::markers::status_marker;

fn icon(state: State) -> &'static str {
    match state {
        State::Received => "📥",
        State::Invalid => "⚠️",
        State::Denied => "⛔",
        State::PendingApproval => "⏳",
        State::Approved => "👍",
        State::Running => "⚙️",
        State::Succeeded => "✅",
        State::Failed | State::TimedOut => "❌",
        State::Rejected => "🚫",
        State::Expired => "⌛",
        State::Cancelled => "🛑",
        State::Interrupted => "⚡",
    }
}

/// A code fence longer than any run of backticks in `text`.
fn fence(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat((longest + 1).max(3))
}

/// Inline code that survives backticks in `text`.
fn code(text: &str) -> String {
    let t: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if t.contains('`') {
        format!("`` {t} ``")
    } else {
        format!("`{t}`")
    }
}

/// Truncate to at most `max` characters.
fn cap(text: &str, max: usize) -> (String, bool) {
    match text.char_indices().nth(max) {
        Some((i, _)) => (text[..i].to_string(), true),
        None => (text.to_string(), false),
    }
}

/// The markdown of a status comment.
pub fn render_status(
    rec: &RequestRecord,
    key: &str,
    dashboard: Option<&str>,
    output_limit: usize,
    prefix: &str,
) -> String {
    let id = rec.request.id;
    let mut s = format!(
        "{}request={id} state={} -->\n",
        status_marker(key),
        rec.state
    );
    s.push_str(&format!(
        "### {} YouOps: {} — **{}**{}\n\n",
        icon(rec.state),
        code(&rec.request.op),
        rec.state.as_str().replace('_', " "),
        if rec.request.dry_run {
            " (dry run)"
        } else {
            ""
        }
    ));
    push_table(&mut s, rec, dashboard);
    push_reason(&mut s, rec);
    push_output(&mut s, rec, dashboard, output_limit);
    if rec.state == State::PendingApproval {
        s.push_str(&format!(
            "\nApprovers: comment `{prefix} approve {id}` (or `{prefix} deny {id} <reason>`). The requester can withdraw it with `{prefix} cancel {id}`.\n"
        ));
    }
    s
}

/// The table of a status comment: request, requester, arguments, approvals,
/// duration, exit code, audit position.
fn push_table(s: &mut String, rec: &RequestRecord, dashboard: Option<&str>) {
    let id = rec.request.id;
    s.push_str("| | |\n|---|---|\n");
    let link = dashboard
        .map(|u| format!(" · [dashboard]({u})"))
        .unwrap_or_default();
    s.push_str(&format!("| Request | `{id}`{link} |\n"));
    s.push_str(&format!(
        "| Requested by | {} |\n",
        rec.request.actor.describe().replace('|', "\\|")
    ));
    push_arguments(s, rec);
    push_approvals(s, rec);
    if let Some(ms) = rec.duration_ms() {
        s.push_str(&format!("| Duration | {:.2} s |\n", ms as f64 / 1000.0));
    }
    if let Some(code_) = rec.outcome.as_ref().and_then(|o| o.exit_code) {
        s.push_str(&format!("| Exit code | {code_} |\n"));
    }
    s.push_str(&format!(
        "| Audit | event #{} `{}` |\n",
        rec.last_seq, rec.last_hash
    ));
}

/// The `Arguments` row, when the request has any.
fn push_arguments(s: &mut String, rec: &RequestRecord) {
    let args: Vec<String> = if rec.request.args.is_empty() {
        rec.request
            .raw_args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    } else {
        rec.request
            .args
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_text()))
            .collect()
    };
    if !args.is_empty() {
        let (a, cut) = cap(&args.join(" "), 500);
        s.push_str(&format!(
            "| Arguments | {}{} |\n",
            code(&a).replace('|', "\\|"),
            if cut { " …" } else { "" }
        ));
    }
}

/// The `Approvals` row: how many are still needed and who gave one.
fn push_approvals(s: &mut String, rec: &RequestRecord) {
    let given: Vec<String> = rec
        .approvals
        .iter()
        .filter(|a| a.approve)
        .map(|a| a.by.describe())
        .collect();
    if rec.state == State::PendingApproval || !given.is_empty() {
        let mut line = String::new();
        if rec.state == State::PendingApproval {
            line.push_str(&format!("{} more needed", rec.approvals_needed));
            if let Some(e) = rec.expires_at {
                line.push_str(&format!(
                    " (until {})",
                    e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ));
            }
        }
        if !given.is_empty() {
            if !line.is_empty() {
                line.push_str(" · ");
            }
            line.push_str(&format!("given by {}", given.join(", ")));
        }
        s.push_str(&format!("| Approvals | {} |\n", line.replace('|', "\\|")));
    }
}

/// Why the request is where it is: every problem of an invalid request, or the
/// one reason.
fn push_reason(s: &mut String, rec: &RequestRecord) {
    if let Some(reason) = &rec.reason {
        if rec.state == State::Invalid {
            s.push_str("\n**The request is not valid.** Edit the issue to fix every problem below; YouOps checks it again after each edit:\n\n");
            for p in reason.split("; ") {
                s.push_str(&format!("- {}\n", p.replace('\n', " ")));
            }
        } else {
            s.push_str(&format!("\n**Why:** {}\n", reason.replace('\n', " ")));
        }
    }
}

/// The run's output, folded and capped at `output_limit` characters.
fn push_output(s: &mut String, rec: &RequestRecord, dashboard: Option<&str>, output_limit: usize) {
    if let Some(out) = rec.outcome.as_ref().filter(|o| !o.output.is_empty()) {
        let (shown, cut) = cap(&out.output, output_limit);
        let f = fence(&shown);
        let mut summary = String::from("Output");
        if cut || out.output_truncated_bytes > 0 {
            summary.push_str(" (truncated");
            if let Some(u) = dashboard {
                summary.push_str(&format!("; full output on the [dashboard]({u})"));
            }
            summary.push(')');
        }
        s.push_str(&format!(
            "\n<details><summary>{summary}</summary>\n\n{f}\n{shown}\n{f}\n</details>\n"
        ));
    }
}

/// The markdown of the comment for a form that could not be read at all.
pub fn render_form_problems(problems: &[String]) -> String {
    let mut s = format!(
        "{}request=none state=invalid -->\n### ⚠️ YouOps could not read this issue\n\n",
        status_marker("issue")
    );
    for p in problems {
        s.push_str(&format!("- {}\n", p.replace('\n', " ")));
    }
    s.push_str("\nEdit the issue to fix it; YouOps reads it again after each edit.\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_outlast_backticks() {
        assert_eq!(fence("plain"), "```");
        assert_eq!(fence("a ```` b"), "`````");
    }

    #[test]
    fn caps_on_char_boundaries() {
        assert_eq!(cap("ééé", 2), ("éé".to_string(), true));
        assert_eq!(cap("ab", 5), ("ab".to_string(), false));
    }
}
