//! `POST /api/v1/reconcile/plan`: the plan of the running git frontend, which
//! a build without the git frontend answers with 501.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
#[cfg(feature = "git")]
use youops_core::policy::Place;

use super::{authenticate, ApiError, ApiResult};
use crate::gitops::GitHandle;
use crate::http::state::AppState;

/// The JSON answer of `POST /api/v1/reconcile/plan`: the plan as
/// `youops reconcile --once --dry-run` prints it, and what its exit code
/// depends on.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlanView {
    /// The plan, rendered as the CLI prints a local one.
    pub text: String,
    /// The planned commit (`None`: the branch has no commits).
    pub commit: Option<String>,
    /// How many resources would be created, updated or deleted.
    pub changes: usize,
    /// Kinds whose actual state could not be observed.
    pub kind_errors: Vec<String>,
}

/// A dry-run reconcile pass of the running git frontend, on the daemon's own
/// state (its clone, what it last applied, its observers). It submits and
/// changes nothing. Allowed to principals who may run every op the declared
/// kinds use, from the git frontend at its location: the plan shows what those
/// ops would be asked to do. A daemon built without the git frontend answers
/// 501 (`not_compiled_in`).
pub(super) async fn plan(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<PlanView>> {
    let p = authenticate(&st, &headers)?;
    let Some(git) = st.git() else {
        return Err(no_git_frontend());
    };
    plan_on(&st, &p, git).await.map(Json)
}

/// The answer of `POST /api/v1/reconcile/plan` when no git frontend runs.
fn no_git_frontend() -> ApiError {
    if cfg!(feature = "git") {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this daemon runs no git frontend (no [frontends.git] in its config)",
        )
    } else {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_compiled_in",
            crate::gitops::NOT_COMPILED_IN,
        )
    }
}

/// The plan of `git` for principal `p`, if `p` may run the ops it shows.
#[cfg(feature = "git")]
async fn plan_on(st: &AppState, p: &str, git: &GitHandle) -> ApiResult<PlanView> {
    {
        let loaded = st.exec().loaded();
        let place = Place {
            frontend: youops_frontend_git::NAME,
            location: &git.config().location,
        };
        for kind in git.kinds().iter() {
            for op in std::iter::once(&kind.apply).chain(kind.delete.as_ref()) {
                let Some(spec) = loaded.catalog.get(op) else {
                    continue;
                };
                if let Err(d) = loaded.policy.authorize(p, spec, place) {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "denied",
                        format!("the plan shows what kind `{}` would do: {d}", kind.name),
                    ));
                }
            }
        }
    }
    let plan = youops_frontend_git::reconcile_once(st.exec(), git, true)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                e.code(),
                format!("reconcile: {e}"),
            )
        })?;
    Ok(PlanView {
        text: plan.to_string(),
        commit: plan.commit.clone(),
        changes: plan.changes().count(),
        kind_errors: plan.kind_errors.clone(),
    })
}

/// Without the git frontend there is no `git` to plan on.
#[cfg(not(feature = "git"))]
async fn plan_on(_: &AppState, _: &str, git: &GitHandle) -> ApiResult<PlanView> {
    match *git {}
}
