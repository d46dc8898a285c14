//! Leases end to end: grant, keep-alive stream, time-to-live with keys,
//! list, revoke, and expiry deleting the attached keys.

use std::time::Duration;

use futures_util::StreamExt;
use ringkv_api::etcdserverpb::lease_client::LeaseClient;
use ringkv_api::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest,
};
use tonic::Code;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_end_to_end() {
    let m = single().await;
    let mut lease = LeaseClient::connect(m.endpoint.clone()).await.unwrap();
    let mut kv = m.kv().await;

    // Grant: the server picks the id; a TTL below the minimum is raised.
    let granted =
        lease.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await.unwrap().into_inner();
    assert!(granted.id > 0 && granted.ttl == 60, "{granted:?}");
    let short =
        lease.lease_grant(LeaseGrantRequest { ttl: 0, id: 4242 }).await.unwrap().into_inner();
    assert_eq!(short.id, 4242);
    assert_eq!(short.ttl, 1, "ceil(1.5 x 200 ms election timeout) = 1 s");
    let err = lease.lease_grant(LeaseGrantRequest { ttl: 60, id: 4242 }).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::FailedPrecondition, "etcdserver: lease already exists")
    );

    // Attach keys; time-to-live lists them.
    for key in ["l/a", "l/b"] {
        kv.put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease: granted.id,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let ttl = lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id: granted.id, keys: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ttl.granted_ttl, 60);
    assert!(ttl.ttl > 0 && ttl.ttl <= 60, "{ttl:?}");
    assert_eq!(ttl.keys, [b"l/a".to_vec(), b"l/b".to_vec()]);
    let missing = lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id: 999, keys: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(missing.ttl, -1, "etcd answers an unknown lease with TTL -1");

    // The list has both.
    let mut ids: Vec<i64> = lease
        .lease_leases(LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner()
        .leases
        .iter()
        .map(|l| l.id)
        .collect();
    ids.sort_unstable();
    let mut want = vec![granted.id, 4242];
    want.sort_unstable();
    assert_eq!(ids, want);

    // Keep-alive stream: one answer per request; an unknown lease is TTL 0.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut answers = lease.lease_keep_alive(requests).await.unwrap().into_inner();
    tx.send(LeaseKeepAliveRequest { id: granted.id }).await.unwrap();
    let a = answers.next().await.unwrap().unwrap();
    assert_eq!((a.id, a.ttl), (granted.id, 60));
    assert!(a.header.unwrap().revision > 1);
    tx.send(LeaseKeepAliveRequest { id: 777 }).await.unwrap();
    let a = answers.next().await.unwrap().unwrap();
    assert_eq!((a.id, a.ttl), (777, 0));
    drop(tx);

    // Expiry: the 1 s lease's key is deleted once it expires.
    kv.put(PutRequest {
        key: b"short".to_vec(),
        value: b"v".to_vec(),
        lease: 4242,
        ..Default::default()
    })
    .await
    .unwrap();
    eventually("the expired lease's key is deleted", || {
        let mut kv = kv.clone();
        async move {
            kv.range(RangeRequest { key: b"short".to_vec(), ..Default::default() })
                .await
                .unwrap()
                .into_inner()
                .kvs
                .is_empty()
        }
    })
    .await;
    let gone = lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id: 4242, keys: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.ttl, -1);

    // Revoke deletes the keys in one revision.
    let before = kv
        .range(RangeRequest { key: b"l/a".to_vec(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let revoked =
        lease.lease_revoke(LeaseRevokeRequest { id: granted.id }).await.unwrap().into_inner();
    assert_eq!(revoked.header.unwrap().revision, before.header.unwrap().revision + 1);
    let after = kv
        .range(RangeRequest {
            key: b"l/".to_vec(),
            range_end: b"l0".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.count, 0);
    let err = lease.lease_revoke(LeaseRevokeRequest { id: granted.id }).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_keep_alive_keeps_a_lease_past_its_ttl() {
    let m = single().await;
    let mut client = m.etcd().await;
    // A 3 s lease renewed every 0.5 s for 4 s: it outlives its TTL only if
    // the renewals work (a stall of over 2.5 s would also expire it).
    let id = client.lease_grant(3, None).await.unwrap().id();
    client.put("kept", "v", Some(etcd_client::PutOptions::new().with_lease(id))).await.unwrap();
    let (mut keeper, mut stream) = client.lease_keep_alive(id).await.unwrap();
    // Renew for several TTLs; the key must survive all of them.
    for _ in 0..8 {
        keeper.keep_alive().await.unwrap();
        let answer = stream.message().await.unwrap().unwrap();
        assert_eq!((answer.id(), answer.ttl()), (id, 3));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let resp = client.get("kept", None).await.unwrap();
    assert_eq!(resp.kvs().len(), 1, "the renewed lease and its key are still there");
    let ttl = client
        .lease_time_to_live(id, Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.keys(), [b"kept".to_vec()]);
}
