//! The senders' shared context: the run's settings, what request `j` of a
//! door submits, and the archived requests read so far.

use std::sync::{Mutex, MutexGuard};

use super::archive::Archived;
use super::args::Args;
use super::doors::Door;
use crate::lock;

/// Everything a sender needs to build its requests.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) base: String,
    pub(crate) slack_base: String,
    pub(crate) args: Args,
    pub(crate) run: String,
    /// Requests read from the archive files so far.
    archived: Mutex<Archived>,
}

impl Ctx {
    /// (op, args as `name=value` pairs) for request `j` of a door.
    pub(crate) fn op_for(&self, door: Door, j: u64) -> (&'static str, Vec<(String, String)>) {
        let tag = format!("{}{j}", &door.name()[..1]);
        if self.args.sleep_every > 0 && j % self.args.sleep_every == self.args.sleep_every - 1 {
            ("soak.sleep", vec![("seconds".into(), "1".into())])
        } else if j % 2 == 1 {
            ("soak.echo", vec![("msg".into(), tag)])
        } else {
            ("soak.noop", Vec::new())
        }
    }

    pub(crate) fn command_text(&self, door: Door, j: u64) -> String {
        let (op, args) = self.op_for(door, j);
        let mut s = op.to_string();
        for (k, v) in args {
            s.push_str(&format!(" {k}={v}"));
        }
        s
    }

    pub(crate) fn user(&self, j: u64) -> usize {
        (j % self.args.users.max(1) as u64) as usize
    }

    /// The context of a run with `args`: `run_tag` makes its ids unique.
    pub(crate) fn new(args: Args, run_tag: String) -> Self {
        Ctx {
            base: args.url.trim_end_matches('/').to_string(),
            slack_base: format!("http://{}", args.slack_listen),
            run: run_tag,
            args,
            archived: Mutex::default(),
        }
    }

    /// The archived requests, after reading any new archive files (empty
    /// without `--archive`).
    pub(crate) fn archived_requests(&self) -> Result<MutexGuard<'_, Archived>, String> {
        let mut a = lock(&self.archived);
        if let Some(dir) = &self.args.archive {
            a.refresh(dir)?;
        }
        Ok(a)
    }
}
