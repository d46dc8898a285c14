//! The Lock and Election services end to end.

use std::time::Duration;

use futures_util::StreamExt;
use ringkv_api::etcdserverpb::lease_client::LeaseClient;
use ringkv_api::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
use ringkv_api::v3electionpb::election_client::ElectionClient;
use ringkv_api::v3electionpb::{CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest};
use ringkv_api::v3lockpb::lock_client::LockClient;
use ringkv_api::v3lockpb::{LockRequest, UnlockRequest};
use tonic::Code;

use crate::common::*;

async fn grant(m: &Member, ttl: i64) -> i64 {
    let mut lease = LeaseClient::connect(m.endpoint.clone()).await.unwrap();
    lease.lease_grant(LeaseGrantRequest { ttl, id: 0 }).await.unwrap().into_inner().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_is_exclusive_and_passes_on_unlock_and_on_lease_revoke() {
    let m = single().await;
    let mut lock = LockClient::connect(m.endpoint.clone()).await.unwrap();
    let (l1, l2, l3) = (grant(&m, 60).await, grant(&m, 60).await, grant(&m, 60).await);

    let first =
        lock.lock(LockRequest { name: b"mutex".to_vec(), lease: l1 }).await.unwrap().into_inner();
    assert_eq!(first.key, format!("mutex/{l1:x}").into_bytes());

    // The second waits while the first holds the lock.
    let mut second_client = lock.clone();
    let mut second = tokio::spawn(async move {
        second_client.lock(LockRequest { name: b"mutex".to_vec(), lease: l2 }).await
    });
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut second).await;
    assert!(waited.is_err(), "the lock is held: the second caller must still wait");
    // A third queues behind the second.
    let mut third_client = lock.clone();
    let mut third = tokio::spawn(async move {
        third_client.lock(LockRequest { name: b"mutex".to_vec(), lease: l3 }).await
    });

    lock.unlock(UnlockRequest { key: first.key.clone() }).await.unwrap();
    let second = second.await.unwrap().unwrap().into_inner();
    assert_eq!(second.key, format!("mutex/{l2:x}").into_bytes());
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut third).await;
    assert!(waited.is_err(), "the second holds the lock now");

    // Revoking the holder's lease releases the lock too.
    let mut lease = LeaseClient::connect(m.endpoint.clone()).await.unwrap();
    lease.lease_revoke(LeaseRevokeRequest { id: l2 }).await.unwrap();
    let third = third.await.unwrap().unwrap().into_inner();
    assert_eq!(third.key, format!("mutex/{l3:x}").into_bytes());

    // A waiter whose client goes away gives up its place: its key is
    // deleted, so it never blocks those behind it.
    // A TTL far past the wait below, so only giving up deletes the key.
    let l4 = grant(&m, 3600).await;
    let mut quitter_client = lock.clone();
    let quitter = tokio::spawn(async move {
        quitter_client.lock(LockRequest { name: b"mutex".to_vec(), lease: l4 }).await
    });
    let quitter_key = format!("mutex/{l4:x}");
    eventually("the waiter's key is in the queue", || async {
        local_value(&m, &quitter_key).await.is_some()
    })
    .await;
    quitter.abort();
    eventually("the abandoned waiter's key is deleted", || async {
        local_value(&m, &quitter_key).await.is_none()
    })
    .await;

    // A lock with a lease that does not exist fails as etcd's does.
    let err = lock.lock(LockRequest { name: b"other".to_vec(), lease: 999 }).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_campaign_proclaim_observe_resign() {
    let m = single().await;
    let mut election = ElectionClient::connect(m.endpoint.clone()).await.unwrap();
    let (l1, l2) = (grant(&m, 60).await, grant(&m, 60).await);

    let err = election.leader(LeaderRequest { name: b"e".to_vec() }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unknown, "election: no leader"));

    let mut observe =
        election.observe(LeaderRequest { name: b"e".to_vec() }).await.unwrap().into_inner();

    let won = election
        .campaign(CampaignRequest { name: b"e".to_vec(), lease: l1, value: b"one".to_vec() })
        .await
        .unwrap()
        .into_inner();
    let leader_key = won.leader.unwrap();
    assert_eq!(leader_key.key, format!("e/{l1:x}").into_bytes());
    assert_eq!(leader_key.lease, l1);
    let seen = observe.next().await.unwrap().unwrap();
    assert_eq!(seen.kv.unwrap().value, b"one");

    // The second candidate waits.
    let mut other = election.clone();
    let mut second = tokio::spawn(async move {
        other
            .campaign(CampaignRequest { name: b"e".to_vec(), lease: l2, value: b"two".to_vec() })
            .await
    });
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut second).await;
    assert!(waited.is_err(), "the first candidate leads: the second waits");

    election
        .proclaim(ProclaimRequest { leader: Some(leader_key.clone()), value: b"one-b".to_vec() })
        .await
        .unwrap();
    let seen = observe.next().await.unwrap().unwrap();
    assert_eq!(seen.kv.unwrap().value, b"one-b");
    let now = election.leader(LeaderRequest { name: b"e".to_vec() }).await.unwrap().into_inner();
    assert_eq!(now.kv.unwrap().value, b"one-b");

    election.resign(ResignRequest { leader: Some(leader_key.clone()) }).await.unwrap();
    let second = second.await.unwrap().unwrap().into_inner();
    assert_eq!(second.leader.unwrap().key, format!("e/{l2:x}").into_bytes());
    let seen = observe.next().await.unwrap().unwrap();
    assert_eq!(seen.kv.unwrap().value, b"two", "observers see the new leader");

    // The old leader can no longer proclaim.
    let err = election
        .proclaim(ProclaimRequest { leader: Some(leader_key), value: b"stale".to_vec() })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "election: not leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_lock_and_campaign() {
    let m = single().await;
    let mut client = m.etcd().await;
    let lease = client.lease_grant(60, None).await.unwrap().id();
    let locked = client
        .lock("crate-lock", Some(etcd_client::LockOptions::new().with_lease(lease)))
        .await
        .unwrap();
    assert_eq!(locked.key(), format!("crate-lock/{lease:x}").as_bytes());
    client.unlock(locked.key()).await.unwrap();
    let won = client.campaign("crate-election", "v", lease).await.unwrap();
    assert_eq!(won.leader().unwrap().key(), format!("crate-election/{lease:x}").as_bytes());
    let leader = client.leader("crate-election").await.unwrap();
    assert_eq!(leader.kv().unwrap().value(), b"v");
}
