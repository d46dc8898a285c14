//! The Cluster and Maintenance APIs end to end.

use futures_util::StreamExt;
use ringkv_api::etcdserverpb::cluster_client::ClusterClient;
use ringkv_api::etcdserverpb::{
    AlarmRequest, AlarmType, HashKvRequest, MemberAddRequest, MemberListRequest,
    MemberPromoteRequest, MemberRemoveRequest, MemberUpdateRequest, MoveLeaderRequest,
    SnapshotRequest, alarm_request::AlarmAction,
};
use tonic::Code;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_list_add_update_promote_remove() {
    let m = single().await;
    let mut cluster = ClusterClient::connect(m.endpoint.clone()).await.unwrap();
    let list =
        cluster.member_list(MemberListRequest { linearizable: true }).await.unwrap().into_inner();
    assert_eq!(list.members.len(), 1);
    let me = &list.members[0];
    assert_eq!(me.id, m.server().member_id().0);
    assert_eq!(me.name, "m0");
    assert_eq!(
        me.client_urls,
        std::slice::from_ref(&m.endpoint),
        "the member published its client URLs"
    );

    // A learner that never starts: added, listed, not promotable, removed.
    let url = format!("http://127.0.0.1:{}", free_port());
    let added = cluster
        .member_add(MemberAddRequest { peer_urls: vec![url.clone()], is_learner: true })
        .await
        .unwrap()
        .into_inner();
    let learner = added.member.unwrap();
    assert!(learner.is_learner && learner.name.is_empty());
    assert_eq!(added.members.len(), 2);
    let err = cluster
        .member_add(MemberAddRequest { peer_urls: vec![url.clone()], is_learner: false })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::FailedPrecondition, "etcdserver: Peer URLs already exists")
    );
    let err = cluster
        .member_add(MemberAddRequest { peer_urls: vec!["not a url".into()], is_learner: false })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "etcdserver: given member URLs are invalid")
    );
    let err = cluster.member_promote(MemberPromoteRequest { id: learner.id }).await.unwrap_err();
    assert_eq!(
        err.message(),
        "etcdserver: can only promote a learner member which is in sync with leader"
    );
    let err = cluster.member_promote(MemberPromoteRequest { id: me.id }).await.unwrap_err();
    assert_eq!(err.message(), "etcdserver: can only promote a learner member");
    let new_url = format!("http://127.0.0.1:{}", free_port());
    let updated = cluster
        .member_update(MemberUpdateRequest { id: learner.id, peer_urls: vec![new_url.clone()] })
        .await
        .unwrap()
        .into_inner();
    let entry = updated.members.iter().find(|x| x.id == learner.id).unwrap();
    assert_eq!(entry.peer_urls, [new_url]);
    let removed =
        cluster.member_remove(MemberRemoveRequest { id: learner.id }).await.unwrap().into_inner();
    assert_eq!(removed.members.len(), 1);
    let err = cluster.member_remove(MemberRemoveRequest { id: learner.id }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "etcdserver: member not found"));
    // The cluster still takes writes with its one voter.
    put(&m, "after", "membership").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_status_hash_kv_alarm_snapshot_move_leader() {
    let m = single().await;
    put(&m, "k", "v").await;
    let st0 = status(&m).await;
    let status = st0;
    let me = m.server().member_id().0;
    assert_eq!(status.version, "3.5.13");
    assert_eq!(status.leader, me);
    assert!(status.raft_index >= 2 && status.raft_applied_index >= 2 && status.raft_term >= 2);
    assert!(status.db_size > 0 && status.errors.is_empty() && !status.is_learner);
    assert_eq!(status.header.unwrap().revision, 2);

    let mut maintenance = m.maintenance().await;
    let h1 = maintenance.hash_kv(HashKvRequest { revision: 0 }).await.unwrap().into_inner();
    let h2 = maintenance.hash_kv(HashKvRequest { revision: 2 }).await.unwrap().into_inner();
    assert_eq!(h1.hash, h2.hash, "revision 2 is the current one");
    put(&m, "k", "v2").await;
    let h3 = maintenance.hash_kv(HashKvRequest { revision: 0 }).await.unwrap().into_inner();
    assert_ne!(h1.hash, h3.hash);
    let h4 = maintenance.hash_kv(HashKvRequest { revision: 2 }).await.unwrap().into_inner();
    assert_eq!(h1.hash, h4.hash, "the hash at a revision does not change");

    // Alarms: activate NOSPACE, writes fail, deactivate, writes work.
    let alarm = |action: AlarmAction| AlarmRequest {
        action: action as i32,
        member_id: me,
        alarm: AlarmType::Nospace as i32,
    };
    maintenance.alarm(alarm(AlarmAction::Activate)).await.unwrap();
    let listed = maintenance.alarm(alarm(AlarmAction::Get)).await.unwrap().into_inner();
    assert_eq!(listed.alarms.len(), 1);
    assert_eq!(
        (listed.alarms[0].member_id, listed.alarms[0].alarm),
        (me, AlarmType::Nospace as i32)
    );
    let err = m
        .kv()
        .await
        .put(ringkv_api::etcdserverpb::PutRequest { key: b"x".to_vec(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded")
    );
    let st = crate::common::status(&m).await;
    assert_eq!(st.errors, [format!("memberID:{me} alarm:NOSPACE")]);
    maintenance.alarm(alarm(AlarmAction::Deactivate)).await.unwrap();
    let listed = maintenance.alarm(alarm(AlarmAction::Get)).await.unwrap().into_inner();
    assert!(listed.alarms.is_empty());
    put(&m, "x", "ok").await;

    // Snapshot: a stream of chunks, the last with remaining_bytes 0, laid
    // out as etcd's: 32 bytes past a 512-byte boundary, ending with the
    // SHA-256 of what precedes it.
    let mut chunks = maintenance.snapshot(SnapshotRequest {}).await.unwrap().into_inner();
    let mut bytes = Vec::new();
    let mut last = None;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.unwrap();
        bytes.extend_from_slice(&chunk.blob);
        last = Some(chunk.remaining_bytes);
    }
    assert_eq!(last, Some(0));
    assert!(bytes.len() > 512);
    assert_eq!(bytes.len() % 512, 32);
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    use sha2::Digest as _;
    assert_eq!(sha2::Sha256::digest(body).as_slice(), digest);

    // MoveLeader to itself is refused; to a stranger too.
    let err = maintenance.move_leader(MoveLeaderRequest { target_id: 12345 }).await.unwrap_err();
    assert_eq!(err.message(), "etcdserver: bad leader transferee");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_with_member_add_joins_catches_up_and_is_promoted() {
    let mut members = cluster_with(1, &[]).await;
    wait_leader(&members).await;
    put(&members[0], "before", "join").await;
    let mut cluster = ClusterClient::connect(members[0].endpoint.clone()).await.unwrap();

    // Added as a learner, as `etcdctl member add --learner` does; then
    // started with --initial-cluster-state existing on an empty directory.
    let [client, peer] = free_ports(2)[..] else { unreachable!("two ports") };
    let peer_url = format!("http://127.0.0.1:{peer}");
    let added = cluster
        .member_add(MemberAddRequest { peer_urls: vec![peer_url.clone()], is_learner: true })
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    let initial = format!("{}={},m1={peer_url}", members[0].name, members[0].peer_url);
    let token = members[0].token.clone();
    let mut joiner =
        member("m1", client, peer, &initial, &token, &["--initial-cluster-state=existing"]);
    joiner.restart().await;
    assert_eq!(joiner.server().member_id().0, added.id, "it found the id MemberAdd chose");

    // It catches up (the write before it joined is on its replica), and
    // publishes its name and client URL.
    let j = &joiner;
    eventually("the learner has the data", || async {
        local_value(j, "before").await.as_deref() == Some(b"join".as_slice())
    })
    .await;
    eventually("the learner published its name", || {
        let mut cluster = cluster.clone();
        async move {
            let list = cluster.member_list(MemberListRequest { linearizable: true }).await.unwrap();
            list.into_inner().members.iter().any(|m| m.id == added.id && m.name == "m1")
        }
    })
    .await;
    // Promoted once in sync: now a two-voter cluster, writable through either.
    eventually("the learner can be promoted", || {
        let mut cluster = cluster.clone();
        async move { cluster.member_promote(MemberPromoteRequest { id: added.id }).await.is_ok() }
    })
    .await;
    members.push(joiner);
    wait_leader(&members).await;
    // Until it applies its promotion it is a learner, and refuses writes
    // (`rpc not supported for learner`), as etcd's does.
    let voter = &members[1];
    eventually("the promoted member takes writes", || async {
        let mut kv = voter.kv().await;
        let put = ringkv_api::etcdserverpb::PutRequest {
            key: "through".into(),
            value: "the new voter".into(),
            ..Default::default()
        };
        kv.put(put).await.is_ok()
    })
    .await;
    let m0 = &members[0];
    eventually("the first member sees the write", || async {
        local_value(m0, "through").await.as_deref() == Some(b"the new voter".as_slice())
    })
    .await;
}
