//! Feedback on the issue: the status comment (one per request, edited in place),
//! reactions and labels, rendered from lifecycle events.
//!
//! This side only writes to GitHub; it never reads issues or comments as
//! requests (that is `inbound`, which uses the markers and renderers
//! here, never the other way round).

mod markers;
mod publish;
mod render;
mod state;
mod worker;

pub(crate) use markers::is_ours;
pub use markers::{parse_status_marker, replied_comment, reply_marker, status_marker};
pub use render::{render_form_problems, render_status};
pub use state::{accepted, end_reaction, state_label, STATE_LABELS};
