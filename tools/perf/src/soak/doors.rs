//! The front doors and what each one's sender records; one send.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::lock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Door {
    Api,
    Slack,
    Github,
    Git,
}

impl Door {
    pub(crate) const ALL: [Door; 4] = [Door::Api, Door::Slack, Door::Github, Door::Git];
    pub(crate) const HTTP: [Door; 3] = [Door::Api, Door::Slack, Door::Github];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Door::Api => "api",
            Door::Slack => "slack",
            Door::Github => "github",
            Door::Git => "git",
        }
    }
}

/// What one door's sender records.
#[derive(Debug, Default)]
pub(crate) struct DoorRec {
    pub(crate) sent: AtomicU64,
    /// Latency (µs from the scheduled send) of every 2xx answer.
    pub(crate) ok_lat: Mutex<Vec<u32>>,
    /// Status → count, all answers.
    pub(crate) statuses: Mutex<BTreeMap<u16, u64>>,
    /// No answer (connect error, timeout, …).
    pub(crate) errors: AtomicU64,
    pub(crate) first_problem: Mutex<Option<String>>,
    /// Completion of the last answer, µs after the start.
    pub(crate) last_done_us: AtomicU64,
}

impl DoorRec {
    pub(crate) fn problem(&self, p: String) {
        let mut first = lock(&self.first_problem);
        if first.is_none() {
            *first = Some(p);
        }
    }

    pub(crate) fn record(
        &self,
        start: Instant,
        scheduled: Instant,
        res: Result<(u16, String), String>,
    ) {
        let done = Instant::now();
        let since = u64::try_from(done.saturating_duration_since(start).as_micros()).unwrap_or(0);
        self.last_done_us.fetch_max(since, Ordering::Relaxed);
        match res {
            Ok((status, text)) => {
                *lock(&self.statuses).entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    let lat = done.saturating_duration_since(scheduled).as_micros();
                    lock(&self.ok_lat).push(u32::try_from(lat).unwrap_or(u32::MAX));
                } else {
                    let text: String = text.chars().take(300).collect();
                    self.problem(format!("HTTP {status}: {text}"));
                }
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.problem(e);
            }
        }
    }
}

/// Every door's record.
pub(crate) type Recs = BTreeMap<Door, DoorRec>;

/// 2xx answers of door `d`.
pub(crate) fn ok_of(recs: &Recs, d: Door) -> u64 {
    lock(&recs[&d].statuses)
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum()
}

/// Send `rb`: (status, body), or why there is no answer.
pub(crate) async fn send(rb: reqwest::RequestBuilder) -> Result<(u16, String), String> {
    match rb.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.map_err(|e| format!("{e:#}"))?;
            Ok((status, text))
        }
        Err(e) => Err(format!("{e:#}")),
    }
}
