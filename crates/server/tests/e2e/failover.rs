//! A three-member cluster in one process: a write through a follower is
//! read on every member; the leader stops; writes resume under a new one;
//! the old leader restarts from its data directory and catches up.

use ringkv_api::etcdserverpb::{MemberListRequest, RangeRequest};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_on_follower_read_everywhere_kill_leader_writes_resume() {
    let mut members = cluster_with(3, &[]).await;
    let leader = wait_leader(&members).await;
    let follower = (leader + 1) % 3;

    put(&members[follower], "through", "follower").await;
    for m in &members {
        // Linearizable reads on every member see it at once.
        let resp = m
            .kv()
            .await
            .range(RangeRequest { key: b"through".to_vec(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.kvs[0].value, b"follower");
    }
    let mut cluster = ringkv_api::etcdserverpb::cluster_client::ClusterClient::connect(
        members[0].endpoint.clone(),
    )
    .await
    .unwrap();
    let list =
        cluster.member_list(MemberListRequest { linearizable: true }).await.unwrap().into_inner();
    assert_eq!(list.members.len(), 3);

    members[leader].stop().await;
    let new_leader = wait_leader(&members).await;
    assert_ne!(new_leader, leader);
    let survivor = members.iter().position(|m| m.server.is_some()).unwrap();
    put(&members[survivor], "after", "failover").await;
    let resp = members[new_leader]
        .kv()
        .await
        .range(RangeRequest { key: b"through".to_vec(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.kvs[0].value, b"follower", "nothing acknowledged is lost");

    // The old leader restarts from its data and catches up.
    members[leader].restart().await;
    let caught_up = &members[leader];
    eventually("the restarted member applies the write it missed", || async {
        local_value(caught_up, "after").await.as_deref() == Some(b"failover".as_slice())
    })
    .await;
}
