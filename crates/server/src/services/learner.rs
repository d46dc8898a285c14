//! etcd's learner rule: a member that is a learner (added with
//! `--learner`, not yet promoted) serves only what it can answer from its
//! own copy without voting: `Maintenance/Status` and serializable
//! `KV/Range`. Every other call, streams included, fails with
//! `Unavailable "etcdserver: rpc not supported for learner"`, which makes
//! clientv3 try its next endpoint. etcd checks this in its gRPC
//! interceptors; here a middleware on the gRPC routes refuses by method
//! ([`refuse_on_learner`]), the JSON gateway checks the same table before
//! it calls a service ([`check_learner`]), and the KV service refuses a
//! linearizable range ([`learner_refuses_range`]), the one rule the method
//! alone cannot tell.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::api::EtcdError;
use crate::runtime::NodeState;

/// The gRPC methods a learner serves, as (service, method); `KV/Range`
/// only when serializable.
pub const LEARNER_METHODS: [(&str, &str); 2] =
    [("etcdserverpb.KV", "Range"), ("etcdserverpb.Maintenance", "Status")];

/// `routes` refusing, while this member is a learner, every method but
/// [`LEARNER_METHODS`].
pub fn refuse_on_learner(routes: axum::Router, state: Arc<NodeState>) -> axum::Router {
    routes.layer(axum::middleware::from_fn_with_state(state, check))
}

/// etcd's learner rule for a call of `service`'s `method` (the JSON
/// gateway's calls included, which reach the services directly).
///
/// # Errors
/// [`EtcdError::NotSupportedForLearner`] when this member is a learner and
/// the method is not one of [`LEARNER_METHODS`].
pub fn check_learner(state: &NodeState, service: &str, method: &str) -> Result<(), EtcdError> {
    if state.is_learner() && !LEARNER_METHODS.contains(&(service, method)) {
        return Err(EtcdError::NotSupportedForLearner);
    }
    Ok(())
}

/// Whether a range must be refused here: a linearizable read on a learner.
pub(crate) fn learner_refuses_range(state: &NodeState, serializable: bool) -> bool {
    !serializable && state.is_learner()
}

async fn check(State(state): State<Arc<NodeState>>, request: Request, next: Next) -> Response {
    // A gRPC path is `/<service>/<method>`; any other path is not a call
    // this rule knows, and is refused on a learner like an unlisted one.
    let (service, method) =
        request.uri().path().strip_prefix('/').and_then(|p| p.split_once('/')).unwrap_or_default();
    if let Err(refused) = check_learner(&state, service, method) {
        return tonic::Status::from(refused).into_http();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::StatusCode;
    use ringkv_consensus::NodeId;
    use ringkv_node::Member;
    use ringkv_storage::mvcc::Revision;
    use tonic::codegen::Service;

    use super::{check_learner, learner_refuses_range, refuse_on_learner};
    use crate::runtime::NodeState;

    const ME: NodeId = NodeId(7);

    fn member(id: NodeId, is_learner: bool) -> Member {
        Member {
            id,
            name: String::new(),
            peer_urls: Vec::new(),
            client_urls: Vec::new(),
            is_learner,
            zone: None,
        }
    }

    /// The gRPC status of a call to `path`: `None` when it reached the
    /// (stand-in) service.
    async fn status_of(state: &Arc<NodeState>, path: &str) -> Option<(String, String)> {
        let routes = axum::Router::new().fallback(|| async { StatusCode::OK });
        let mut router = refuse_on_learner(routes, Arc::clone(state));
        let request = axum::http::Request::post(path).body(Body::empty()).unwrap();
        let response = router.call(request).await.unwrap();
        let header =
            |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        header("grpc-status").map(|code| (code, header("grpc-message").unwrap_or_default()))
    }

    #[tokio::test]
    async fn a_learner_serves_only_status_and_serializable_ranges() {
        let state = Arc::new(NodeState::new(ME, 1, Revision(1)));
        // Another member being a learner does not make this one one.
        state.set_members(vec![
            member(NodeId(1), false),
            member(ME, false),
            member(NodeId(9), true),
        ]);
        assert!(!state.is_learner());
        assert_eq!(status_of(&state, "/etcdserverpb.KV/Put").await, None);
        assert!(!learner_refuses_range(&state, false));
        assert!(check_learner(&state, "etcdserverpb.Cluster", "MemberList").is_ok());

        state.set_members(vec![member(NodeId(1), false), member(ME, true)]);
        assert!(state.is_learner());
        // Unavailable; the message percent-encoded, as gRPC sends it.
        let message = "etcdserver:%20rpc%20not%20supported%20for%20learner";
        let refused = Some(("14".to_owned(), message.to_owned()));
        for path in [
            "/etcdserverpb.KV/Put",
            "/etcdserverpb.KV/Txn",
            "/etcdserverpb.Watch/Watch",
            "/etcdserverpb.Lease/LeaseGrant",
            "/etcdserverpb.Cluster/MemberList",
            "/etcdserverpb.Maintenance/Snapshot",
            "/etcdserverpb.Auth/Authenticate",
            "/v3lockpb.Lock/Lock",
            "/not-grpc",
        ] {
            assert_eq!(status_of(&state, path).await, refused, "{path}");
        }
        for path in ["/etcdserverpb.KV/Range", "/etcdserverpb.Maintenance/Status"] {
            assert_eq!(status_of(&state, path).await, None, "{path}");
        }
        assert!(learner_refuses_range(&state, false));
        assert!(!learner_refuses_range(&state, true));
        assert!(check_learner(&state, "etcdserverpb.Maintenance", "Status").is_ok());
        assert!(check_learner(&state, "etcdserverpb.Cluster", "MemberList").is_err());

        // Promoted: everything is served again.
        state.set_members(vec![member(NodeId(1), false), member(ME, false)]);
        assert_eq!(status_of(&state, "/etcdserverpb.KV/Put").await, None);
        assert!(!learner_refuses_range(&state, false));
    }
}
