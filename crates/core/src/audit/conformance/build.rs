//! Builders of the requests, events and append options that store tests
//! append: the suite's own, and those of every backend's tests.
//!
//! A request is built as a frontend submits it ([`Request`] cannot be built
//! outside this crate): a fresh id, no arguments, created now. What a test
//! relies on beyond that is in the builder's name ([`request_via`],
//! [`keyed_request`], [`delivery`]) or set on the result at the call site.
//!
//! ```
//! use youops_core::audit::conformance::build::{keyed, keyed_request, notice, received, to};
//! use youops_core::model::State;
//!
//! let r = keyed_request("ops.deploy", "delivery-1");
//! let events = vec![received(&r), to(r.id, State::Running), notice("deployed")];
//! let opts = keyed("delivery-1");
//! assert_eq!(opts.dedup_key, r.dedup_key);
//! assert_eq!(events[0].request_id, Some(r.id));
//! ```

use std::sync::Arc;

use chrono::Utc;

use crate::audit::AppendOptions;
use crate::model::{Actor, EventBody, NewEvent, Origin, Request, RequestId, State, Transition};

/// A request of `op` from the `cli` frontend: a fresh id, no arguments, no
/// dedup key, created now.
pub fn request(op: &str) -> Request {
    request_via(op, "cli")
}

/// A request of `op` from `frontend` (its actor's frontend and its origin),
/// otherwise as [`request`].
pub fn request_via(op: &str, frontend: &str) -> Request {
    Request {
        id: RequestId::new(),
        op: op.into(),
        args: Default::default(),
        raw_args: Vec::new(),
        secret_args: Vec::new(),
        actor: Actor::new(frontend, "tester"),
        origin: Origin::new(frontend),
        dedup_key: None,
        dedup_expires: false,
        dry_run: false,
        provenance: Default::default(),
        created_at: Utc::now(),
        digest: "ab".repeat(32),
        retry_of: None,
        node: None,
    }
}

/// A request of `op` that carries the dedup key `key`, claimed for good, as
/// the executor submits it (its `received` event carries the key, from which
/// a store rebuilds or imports the claim). Append it with [`keyed`]`(key)`.
pub fn keyed_request(op: &str, key: &str) -> Request {
    let mut r = request(op);
    r.dedup_key = Some(key.to_string());
    r
}

/// A request of `op` whose claim of `key` expires after the store's dedup
/// TTL (a delivery id), and the durable append options that claim it so.
pub fn delivery(op: &str, key: &str) -> (Request, AppendOptions) {
    let mut r = keyed_request(op, key);
    r.dedup_expires = true;
    (r, claiming(key, true))
}

/// The `received` event of `r`.
pub fn received(r: &Request) -> NewEvent {
    NewEvent::request(
        r.id,
        EventBody::Received {
            request: Arc::new(r.clone()),
        },
    )
}

/// The transition of request `id` to `state`.
pub fn to(id: RequestId, state: State) -> NewEvent {
    NewEvent::transition(id, Transition::to(state))
}

fn note(message: impl Into<String>) -> EventBody {
    EventBody::Notice {
        source: "test".into(),
        kind: "note".into(),
        message: message.into(),
        data: serde_json::Value::Null,
    }
}

/// A global notice (of no request) saying `message`.
pub fn notice(message: impl Into<String>) -> NewEvent {
    NewEvent::global(note(message))
}

/// A notice of request `id` saying `message`.
pub fn notice_on(id: RequestId, message: impl Into<String>) -> NewEvent {
    NewEvent::request(id, note(message))
}

/// Durable append options claiming `key` for good.
pub fn keyed(key: &str) -> AppendOptions {
    claiming(key, false)
}

/// Durable append options claiming `key`: for good, or, if `expires`, until
/// the store's dedup TTL.
pub fn claiming(key: &str, expires: bool) -> AppendOptions {
    let mut o = AppendOptions::durable();
    o.dedup_key = Some(key.to_string());
    o.dedup_expires = expires;
    o
}
