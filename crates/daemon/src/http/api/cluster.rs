//! `GET /api/v1/cluster`: what the dashboard's `/cluster` page shows, as
//! JSON. A daemon that runs alone answers 404 (`not_a_cluster`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::{authenticate, ApiError, ApiResult};
use crate::http::state::{AppState, ClusterStatus};

/// This node, the leader lease, every node and every op lock lease (see
/// [`ClusterStatus`]); any authenticated principal may read it.
pub(super) async fn status(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<ClusterStatus>> {
    authenticate(&st, &headers)?;
    let Some(source) = st.cluster() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_a_cluster",
            "this daemon runs alone: it is not a node of a cluster",
        ));
    };
    match source.status().await {
        Ok(status) => Ok(Json(status)),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "reading the cluster's status");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                format!("the cluster's status could not be read: {e:#}"),
            ))
        }
    }
}
