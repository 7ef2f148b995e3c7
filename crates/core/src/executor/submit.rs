//! Submitting a request: validation, authorization, the approval gate and dedup.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::help::approvers_text;
use super::{lock, Executor, Loaded, PendingRun, Ticket};
use crate::audit::{AppendOptions, StoreError};
use crate::catalog::OpSpec;
use crate::error::{Error, Result};
use crate::model::{
    Actor, EventBody, NewEvent, Request, RequestId, RequestRecord, RunOutcome, State, Submission,
    Transition, Value, REDACTED,
};
use crate::policy::Place;
use crate::runner;

/// What happens to a request once its first events are durable.
enum Next {
    Nothing,
    Run(Arc<OpSpec>),
    Pending(chrono::DateTime<Utc>),
}

/// A submission checked against the catalog.
struct Validated {
    /// The op, if the catalog has it.
    op: Option<Arc<OpSpec>>,
    /// Names of the op's secret params.
    secret_names: Vec<String>,
    /// The arguments with defaults filled in (empty when invalid).
    full_args: BTreeMap<String, Value>,
    /// Why the submission is invalid, if it is.
    invalid: Option<String>,
}

impl Validated {
    fn check(loaded: &Loaded, sub: &Submission) -> Self {
        let op = loaded.op(&sub.op);
        let secret_names: Vec<String> = op.as_ref().map(|o| o.secret_params()).unwrap_or_default();
        let validated = match &op {
            None => Err(vec![format!(
                "unknown op `{}`{}",
                sub.op,
                loaded
                    .catalog
                    .suggest(&sub.op)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default()
            )]),
            Some(op) => op.validate_args(&sub.args),
        };
        let (full_args, invalid) = match validated {
            Ok(a) => (a, None),
            Err(errs) => (BTreeMap::new(), Some(errs.join("; "))),
        };
        Validated {
            op,
            secret_names,
            full_args,
            invalid,
        }
    }
}

impl Executor {
    /// Submit a request. Returns once its first events are durable: the request is
    /// then accepted (it runs in the background, or waits for approvals), or
    /// recorded as `invalid`/`denied` with the reason. A dedup key seen before
    /// returns the earlier request with `duplicate: true` and runs nothing.
    pub async fn submit(&self, sub: Submission) -> Result<Ticket> {
        self.submit_inner(sub, None).await
    }

    pub(super) async fn submit_inner(
        &self,
        sub: Submission,
        retry_of: Option<RequestId>,
    ) -> Result<Ticket> {
        if !self.is_accepting() {
            return Err(Error::ShuttingDown);
        }
        let store = &self.inner.store;
        if let Some(key) = &sub.dedup_key {
            if let Some(id) = store.find_dedup(key).await? {
                return self.duplicate(id).await;
            }
        }
        let loaded = self.loaded();
        let id = RequestId::new();
        let mut actor = sub.actor.clone();
        actor.principal = self.resolve(&sub.actor);
        self.take_token(&loaded, &actor)?;
        let v = Validated::check(&loaded, &sub);
        let request = Arc::new(self.request(&sub, id, actor, &v, retry_of));
        let mut events = vec![NewEvent::request(
            id,
            EventBody::Received {
                request: Arc::clone(&request),
            },
        )];
        let next = self.gate(&loaded, &sub, &request.actor, id, &v, &mut events);
        let mut opts = AppendOptions::durable();
        opts.dedup_key = sub.dedup_key.clone();
        opts.dedup_expires = sub.dedup_key.is_some() && sub.dedup_expires;
        let _published = self.append_guard();
        let stored = match store.append(events, opts).await {
            Ok(s) => s,
            Err(StoreError::Duplicate(existing)) => return self.duplicate(existing).await,
            Err(e) => return Err(e.into()),
        };
        let mut record = RequestRecord::new(request, &stored[0]);
        for e in &stored[1..] {
            record.apply(e);
        }
        for e in &stored {
            self.publish(e.clone(), &record);
        }
        match next {
            Next::Nothing => {}
            Next::Pending(expires_at) => {
                lock(&self.inner.pending).insert(
                    id,
                    PendingRun {
                        args: v.full_args,
                        expires_at,
                    },
                );
            }
            Next::Run(op) => self.spawn_run(record.clone(), op, v.full_args),
        }
        Ok(Ticket {
            record,
            duplicate: false,
        })
    }

    /// The request as recorded: secret values redacted, the raw arguments of an
    /// invalid submission kept (by name only where they may be secret).
    fn request(
        &self,
        sub: &Submission,
        id: RequestId,
        actor: Actor,
        v: &Validated,
        retry_of: Option<RequestId>,
    ) -> Request {
        let Validated {
            op,
            secret_names,
            full_args,
            invalid,
        } = v;
        let redacted: BTreeMap<String, Value> = full_args
            .iter()
            .map(|(k, v)| {
                if secret_names.contains(k) {
                    (k.clone(), Value::Str(REDACTED.into()))
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect();
        let raw_args = if invalid.is_some() {
            sub.args
                .iter()
                .map(|(k, v)| {
                    // Unknown ops: we cannot tell which values are secret, so keep names only.
                    let keep = op.is_some() && !secret_names.contains(k);
                    (k.clone(), if keep { v.clone() } else { REDACTED.into() })
                })
                .collect()
        } else {
            Vec::new()
        };
        Request {
            id,
            op: sub.op.clone(),
            digest: self.digest(&sub.op, full_args, secret_names),
            args: redacted,
            raw_args,
            secret_args: secret_names
                .iter()
                .filter(|n| full_args.contains_key(*n))
                .cloned()
                .collect(),
            actor,
            origin: sub.origin.clone(),
            dedup_key: sub.dedup_key.clone(),
            dedup_expires: sub.dedup_key.is_some() && sub.dedup_expires,
            dry_run: sub.dry_run,
            provenance: sub.provenance.clone(),
            created_at: Utc::now(),
            retry_of,
            node: self.inner.node.clone(),
        }
    }

    /// The gate a new request passes: invalid, denied, a dry run, pending
    /// approvals, or run now. Pushes the transition (if any) onto `events`.
    fn gate(
        &self,
        loaded: &Loaded,
        sub: &Submission,
        actor: &Actor,
        id: RequestId,
        v: &Validated,
        events: &mut Vec<NewEvent>,
    ) -> Next {
        if let Some(reason) = &v.invalid {
            events.push(NewEvent::transition(
                id,
                Transition::to(State::Invalid).reason(reason.clone()),
            ));
            return Next::Nothing;
        }
        let (Some(op), Some(principal)) = (&v.op, &actor.principal) else {
            events.push(NewEvent::transition(
                id,
                Transition::to(State::Denied).reason(
                    Error::UnknownIdentity {
                        frontend: actor.frontend.clone(),
                        external_id: actor.external_id.clone(),
                    }
                    .to_string(),
                ),
            ));
            return Next::Nothing;
        };
        let place = Place {
            frontend: &sub.origin.frontend,
            location: &sub.origin.location,
        };
        if let Err(denial) = loaded.policy.authorize(principal, op, place) {
            events.push(NewEvent::transition(
                id,
                Transition::to(State::Denied).reason(denial.0),
            ));
            Next::Nothing
        } else if sub.dry_run {
            let t = self.dry_run(loaded, op, id, &v.full_args, principal);
            events.push(NewEvent::transition(id, t));
            Next::Nothing
        } else if op.approvals > 0 {
            let ttl = op.approval_ttl.unwrap_or(loaded.settings.approval_ttl).0;
            let expires =
                Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1));
            let mut t = Transition::to(State::PendingApproval).reason(format!(
                "needs {} approval(s) from {}",
                op.approvals,
                approvers_text(&loaded.policy, op)
            ));
            t.approvals_needed = Some(op.approvals);
            t.expires_at = Some(expires);
            events.push(NewEvent::transition(id, t));
            Next::Pending(expires)
        } else {
            Next::Run(op.clone())
        }
    }

    /// A dry run ends at once, saying what would run.
    fn dry_run(
        &self,
        loaded: &Loaded,
        op: &Arc<OpSpec>,
        id: RequestId,
        full_args: &BTreeMap<String, Value>,
        principal: &str,
    ) -> Transition {
        let ctx = self.run_context(
            loaded,
            op.clone(),
            id,
            full_args,
            Some(principal.to_string()),
            CancellationToken::new(),
        );
        Transition::to(State::Succeeded)
            .reason("dry run: nothing was run")
            .outcome(RunOutcome {
                exit_code: Some(0),
                output: format!(
                    "dry run: would {}{}",
                    runner::describe(&ctx),
                    if op.approvals > 0 {
                        format!(" after {} approval(s)", op.approvals)
                    } else {
                        String::new()
                    }
                ),
                ..Default::default()
            })
    }

    async fn duplicate(&self, id: RequestId) -> Result<Ticket> {
        let record =
            self.inner.store.request(id).await?.ok_or_else(|| {
                Error::Internal(format!("dedup index names missing request {id}"))
            })?;
        Ok(Ticket {
            record,
            duplicate: true,
        })
    }

    fn digest(&self, op: &str, args: &BTreeMap<String, Value>, secret: &[String]) -> String {
        let mut canon = BTreeMap::new();
        for (k, v) in args {
            let j = if secret.contains(k) {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(&self.inner.digest_key).expect("any key size");
                mac.update(v.as_text().as_bytes());
                serde_json::Value::String(format!(
                    "hmac:{}",
                    hex::encode(mac.finalize().into_bytes())
                ))
            } else {
                v.to_json()
            };
            canon.insert(k.clone(), j);
        }
        let bytes = serde_json::to_vec(&serde_json::json!({ "op": op, "args": canon }))
            .expect("json values serialize");
        hex::encode(Sha256::digest(bytes))
    }
}
