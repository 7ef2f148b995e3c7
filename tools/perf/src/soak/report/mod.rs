//! The soak's report: the text `scripts/soak.sh` prints and parses (per-door
//! table, census, feedback, memory, store, then one PASS/FAIL line per
//! check), and the same as JSON with `--json FILE`.

mod resources;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use super::args::Args;
use super::census::Census;
use super::doors::{ok_of, Door, Recs};
use super::drain::Drained;
use super::fake_github::GithubFake;
use super::fake_slack::SlackFake;
use super::sampling::Samples;
use super::stats::{f2, percentile};
use crate::lock;

/// Everything the run gathered.
#[derive(Debug)]
pub(crate) struct Outcome<'a> {
    pub(crate) args: &'a Args,
    pub(crate) recs: &'a Recs,
    /// Longest delay of an HTTP send behind its schedule.
    pub(crate) max_lag: Duration,
    /// Length of the load phase, s (at least `--duration`).
    pub(crate) load_secs: f64,
    pub(crate) drain_secs: f64,
    pub(crate) drain: Drained,
    /// Git commits made, and the `git commit` durations (µs, sorted).
    pub(crate) commits: u64,
    pub(crate) commit_us: &'a [u32],
    pub(crate) census: &'a Census,
    pub(crate) samples: &'a Samples,
    pub(crate) slack: &'a SlackFake,
    pub(crate) github: &'a GithubFake,
}

/// The report being written: its text, its JSON, and the checks so far.
#[derive(Debug, Default)]
struct Report {
    out: String,
    json: serde_json::Map<String, Value>,
    checks: Vec<(String, bool)>,
}

impl Report {
    /// One line of text.
    fn line(&mut self, text: impl AsRef<str>) {
        self.out.push_str(text.as_ref());
        self.out.push('\n');
    }

    fn check(&mut self, what: impl Into<String>, ok: bool) {
        self.checks.push((what.into(), ok));
    }
}

/// Print the report (and write `--json`); whether every check passed.
pub(crate) fn report(o: &Outcome<'_>) -> Result<bool, String> {
    let mut r = Report::default();
    doors(&mut r, o);
    census(&mut r, o);
    feedback(&mut r, o);
    resources::memory(&mut r, o);
    finish(r, o)
}

/// The offered load, and the per-door table of answers and latencies.
fn doors(r: &mut Report, o: &Outcome<'_>) {
    let args = o.args;
    let rate = args.rate;
    r.line(format!(
        "offered: {rate} req/s over {} in turn ({:.1} req/s each), a git commit every {:?}; load {:.1} s, drain {:.1} s{}",
        args.doors.join("/"),
        rate / args.doors.len() as f64,
        args.git_every,
        args.duration.as_secs_f64(),
        o.drain_secs,
        if o.drain.drained { "" } else { " (drain timed out)" }
    ));
    r.line(format!(
        "sender: max send lag {:.1} ms",
        o.max_lag.as_secs_f64() * 1e3
    ));
    r.line("");
    r.line("| front door | sent | 2xx | non-2xx | no answer | achieved req/s | p50 ms | p99 ms | max ms |");
    r.line("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut doors_json = serde_json::Map::new();
    let mut all_2xx = true;
    for d in Door::ALL {
        let (row_ok, row_json) = door_row(r, o, d);
        all_2xx &= row_ok;
        doors_json.insert(d.name().into(), row_json);
    }
    r.line(format!(
        "(git row: one commit + one POST /git/webhook each; latency = commit + webhook ack; `git commit` alone p50 {} ms)",
        f2(percentile(o.commit_us, 50.0))
    ));
    r.json.insert("doors".into(), Value::Object(doors_json));
    r.check("every request of every front door got a 2xx", all_2xx);
}

/// Door `d`'s row (and first problem): whether every request got a 2xx, and
/// its JSON.
fn door_row(r: &mut Report, o: &Outcome<'_>, d: Door) -> (bool, Value) {
    let rec = &o.recs[&d];
    let mut lat = std::mem::take(&mut *lock(&rec.ok_lat));
    lat.sort_unstable();
    let statuses = lock(&rec.statuses).clone();
    let ok: u64 = statuses
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    let non2xx: u64 = statuses.values().sum::<u64>() - ok;
    let errors = rec.errors.load(Ordering::Relaxed);
    let sent = rec.sent.load(Ordering::Relaxed);
    let window = (rec.last_done_us.load(Ordering::Relaxed) as f64 / 1e6).max(o.load_secs);
    let achieved = ok as f64 / window;
    let all_2xx = !(non2xx > 0 || errors > 0 || ok != sent);
    r.line(format!(
        "| {} | {sent} | {ok} | {non2xx} | {errors} | {achieved:.2} | {} | {} | {} |",
        d.name(),
        f2(percentile(&lat, 50.0)),
        f2(percentile(&lat, 99.0)),
        f2(lat.last().map(|v| *v as f64 / 1000.0))
    ));
    let row = json!({
        "sent": sent, "ok": ok, "non_2xx": non2xx, "no_answer": errors,
        "statuses": statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "achieved_rps": achieved,
        "ack_ms": { "p50": percentile(&lat, 50.0), "p90": percentile(&lat, 90.0),
                    "p99": percentile(&lat, 99.0), "max": lat.last().map(|v| *v as f64 / 1000.0) },
        "first_problem": lock(&rec.first_problem).clone(),
    });
    if let Some(p) = lock(&rec.first_problem).as_ref() {
        r.line(format!("  {} first problem: {p}", d.name()));
    }
    (all_2xx, row)
}

/// The requests in the store, by front door, op and state; accepted against
/// stored; the drain's checks.
fn census(r: &mut Report, o: &Outcome<'_>) {
    let census = o.census;
    r.line("");
    r.line(format!(
        "requests in the store: {} (by front door, op and state):",
        census.total
    ));
    let (all_succeeded, terminal) = census_states(r, census);
    let in_store = |fe: &str, op: Option<&str>| census.in_store(fe, op);
    let ok_of = |d: Door| ok_of(o.recs, d);
    let git_trailers_n = in_store("git", Some("soak.echo"));
    let git_applies = in_store("git", Some("soak.svc.apply"));
    let exact = ok_of(Door::Api) == in_store("api", None)
        && ok_of(Door::Slack) == in_store("slack", None)
        && ok_of(Door::Github) == in_store("github", None)
        && git_trailers_n == o.commits;
    r.line(format!(
        "accepted vs stored: api {} / {}, slack {} / {}, github {} / {}, git trailers {} commits / {} requests (+ {} resource applies)",
        ok_of(Door::Api),
        in_store("api", None),
        ok_of(Door::Slack),
        in_store("slack", None),
        ok_of(Door::Github),
        in_store("github", None),
        o.commits,
        git_trailers_n,
        git_applies
    ));
    r.check(
        "one stored request per accepted call (and per git trailer)",
        exact,
    );
    r.check(
        format!(
            "every request terminal after the drain (unfinished at the last poll: {})",
            o.drain
                .last_unfinished
                .map_or("?".into(), |n: usize| n.to_string())
        ),
        terminal,
    );
    r.check(
        format!(
            "feedback settled within the drain of {:?} (no new call for 3 s)",
            o.args.drain
        ),
        o.drain.drained,
    );
    r.check("every request succeeded", all_succeeded);
}

/// One line (and JSON) per front door of the census: (every request
/// succeeded, every request terminal).
fn census_states(r: &mut Report, census: &Census) -> (bool, bool) {
    let mut census_json = serde_json::Map::new();
    let mut all_succeeded = true;
    let mut terminal = true;
    for (fe, m) in &census.by {
        let parts: Vec<String> = m
            .iter()
            .map(|((op, st), n)| format!("{op} {st} {n}"))
            .collect();
        let e2e = census.e2e_ms.get(fe).map(Vec::as_slice).unwrap_or(&[]);
        r.line(format!(
            "  {fe}: {}; created → last state change p50 {} ms, p99 {} ms",
            parts.join(", "),
            f2(percentile(e2e, 50.0)),
            f2(percentile(e2e, 99.0))
        ));
        for ((_, st), _) in m.iter() {
            if st != "succeeded" {
                all_succeeded = false;
            }
            if matches!(
                st.as_str(),
                "received" | "pending_approval" | "approved" | "running"
            ) {
                terminal = false;
            }
        }
        census_json.insert(
            fe.clone(),
            json!({
                "states": m.iter().map(|((op, st), n)| (format!("{op} {st}"), json!(n))).collect::<serde_json::Map<_, _>>(),
                "e2e_ms": { "p50": percentile(e2e, 50.0), "p99": percentile(e2e, 99.0), "max": e2e.last().map(|v| *v as f64 / 1000.0) },
            }),
        );
    }
    r.json.insert("requests".into(), Value::Object(census_json));
    (all_succeeded, terminal)
}

/// The feedback calls the fakes saw, and its checks.
fn feedback(r: &mut Report, o: &Outcome<'_>) {
    let (slack, github) = (o.slack, o.github);
    let slack_calls = lock(&slack.calls).clone();
    let gh_calls = lock(&github.calls).clone();
    let slack_results = lock(&slack.results).len() as u64;
    let slack_mentioned = lock(&slack.mentioned).len() as u64;
    let rockets = lock(&github.rockets).len() as u64;
    let fmt_calls = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let slack_total: u64 = slack_calls.values().sum();
    let gh_total: u64 = gh_calls.values().sum();
    r.line("");
    r.line(format!(
        "feedback to the fake Slack: {slack_total} calls ({}); {slack_mentioned} requests mentioned, {slack_results} with a `succeeded` result in their thread",
        fmt_calls(&slack_calls)
    ));
    r.line(format!(
        "feedback to the fake GitHub: {gh_total} calls ({}); {rockets} command comments with a rocket",
        fmt_calls(&gh_calls)
    ));
    let slack_ok = o.census.in_store("slack", None);
    let gh_ok = o.census.in_store("github", None);
    r.line(format!(
        "feedback calls per request: Slack {:.2}, GitHub {:.2}",
        slack_total as f64 / slack_ok.max(1) as f64,
        gh_total as f64 / gh_ok.max(1) as f64
    ));
    r.check(
        format!(
            "every Slack request's result posted in its thread ({slack_results} of {slack_ok})"
        ),
        slack_results == slack_ok,
    );
    r.check(
        format!("every GitHub request got its rocket ({rockets} of {gh_ok})"),
        rockets == gh_ok,
    );
    r.json.insert(
        "feedback".into(),
        json!({
            "slack": { "calls": slack_calls, "results": slack_results, "mentioned": slack_mentioned },
            "github": { "calls": gh_calls, "rockets": rockets },
        }),
    );
}

/// The checks' verdicts; print the text, write the JSON file.
fn finish(mut r: Report, o: &Outcome<'_>) -> Result<bool, String> {
    let args = o.args;
    r.line("");
    let mut all = true;
    let checks = std::mem::take(&mut r.checks);
    for (what, ok) in &checks {
        all &= ok;
        r.line(format!("{} {what}", if *ok { "PASS" } else { "FAIL" }));
    }
    r.json.insert(
        "checks".into(),
        Value::Array(
            checks
                .iter()
                .map(|(w, ok)| json!({ "check": w, "ok": ok }))
                .collect(),
        ),
    );
    r.json.insert(
        "config".into(),
        json!({ "rate": args.rate, "duration_s": args.duration.as_secs_f64(), "git_every_s": args.git_every.as_secs_f64(),
                "users": args.users, "channels": args.channels, "sleep_every": args.sleep_every,
                "commits": o.commits }),
    );
    print!("{}", r.out);
    if let Some(path) = &args.json {
        let text = Value::Object(r.json).to_string();
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(all)
}
