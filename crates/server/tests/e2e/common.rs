//! In-process ringkv members on loopback for the end-to-end tests: each
//! with free ports and a temporary data directory, and clients for them.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use ringkv_api::etcdserverpb::kv_client::KvClient;
use ringkv_api::etcdserverpb::maintenance_client::MaintenanceClient;
use ringkv_api::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};
use ringkv_server::config::parse_from;
use ringkv_server::server::Server;
use tonic::transport::Channel;

/// Heartbeat of test members, in milliseconds: short, so that a single
/// node elects itself quickly and leases can be short.
pub const HEARTBEAT_MS: u64 = 20;

/// Election timeout of test members, in milliseconds (the shortest lease
/// TTL is then 1 s).
pub const ELECTION_MS: u64 = 200;

/// Bounds every wait for a condition; generous, the machine is shared.
/// Reaching it fails the test as a hang, it does not check speed.
pub const WAIT: Duration = Duration::from_secs(60);

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `n` distinct free ports: each listener is held until all are chosen,
/// so the kernel cannot hand out one port twice (two members on one port
/// made a founding cluster refuse its own `--initial-cluster`).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// One in-process member and its data directory.
pub struct Member {
    /// The server; `None` once stopped.
    pub server: Option<Server>,
    /// `http://127.0.0.1:<client port>`.
    pub endpoint: String,
    /// `--name`.
    pub name: String,
    /// `http://127.0.0.1:<peer port>`.
    pub peer_url: String,
    /// `--initial-cluster-token`.
    pub token: String,
    /// The arguments it was started with (to restart it).
    pub args: Vec<String>,
    /// Its data directory, kept across restarts and removed on drop.
    #[allow(dead_code, reason = "held for its lifetime")]
    pub dir: tempfile::TempDir,
}

impl Member {
    /// The running server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("the member runs")
    }

    /// A KV client.
    pub async fn kv(&self) -> KvClient<Channel> {
        KvClient::connect(self.endpoint.clone()).await.unwrap()
    }

    /// A Maintenance client.
    pub async fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::connect(self.endpoint.clone()).await.unwrap()
    }

    /// A real etcd client (the `etcd-client` crate).
    pub async fn etcd(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint.as_str()], None).await.unwrap()
    }

    /// Stops the member gracefully.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Starts the member again on its ports and data.
    pub async fn restart(&mut self) {
        assert!(self.server.is_none(), "stop it first");
        let config = parse_from(self.args.clone(), Vec::<(String, String)>::new()).unwrap();
        self.server = Some(Server::start(config).await.unwrap());
    }
}

/// Starts members named `m0..` founding one cluster, `extra` flags added
/// to each.
pub async fn cluster_with(n: usize, extra: &[&str]) -> Vec<Member> {
    let all = free_ports(2 * n);
    let ports: Vec<(u16, u16)> = all.chunks(2).map(|p| (p[0], p[1])).collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
        .collect();
    let token = format!("e2e-{}", free_port());
    let mut members = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let mut member =
            member(&format!("m{i}"), *client, *peer, &initial.join(","), &token, extra);
        member.restart().await;
        members.push(member);
    }
    members
}

/// A member's configuration (not started).
pub fn member(
    name: &str,
    client: u16,
    peer: u16,
    initial: &str,
    token: &str,
    extra: &[&str],
) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "ringkv".to_owned(),
        format!("--name={name}"),
        format!("--data-dir={}", dir.path().join("data").display()),
        format!("--listen-client-urls=http://127.0.0.1:{client}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-cluster={initial}"),
        format!("--initial-cluster-token={token}"),
        format!("--heartbeat-interval={HEARTBEAT_MS}"),
        format!("--election-timeout={ELECTION_MS}"),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Member {
        server: None,
        endpoint: format!("http://127.0.0.1:{client}"),
        name: name.to_owned(),
        peer_url: format!("http://127.0.0.1:{peer}"),
        token: token.to_owned(),
        args,
        dir,
    }
}

/// Starts one single-node member and waits until it leads.
pub async fn single() -> Member {
    single_with(&[]).await
}

/// [`single`] with extra flags.
pub async fn single_with(extra: &[&str]) -> Member {
    let mut members = cluster_with(1, extra).await;
    wait_leader(&members).await;
    members.pop().unwrap()
}

/// Waits until every running member knows the same leader; returns the
/// index of the member that leads.
pub async fn wait_leader(members: &[Member]) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut leaders = Vec::new();
        for m in members.iter().filter(|m| m.server.is_some()) {
            leaders.push(m.server().state().leader());
        }
        if let Some(Some(leader)) = leaders.first().copied()
            && leaders.iter().all(|l| *l == Some(leader))
            && let Some(i) = members
                .iter()
                .position(|m| m.server.as_ref().is_some_and(|s| s.member_id() == leader))
        {
            return i;
        }
        assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls an async condition until it holds (fails the test after [`WAIT`]).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Puts `key` = `value` through `member`.
pub async fn put(member: &Member, key: &str, value: &str) -> i64 {
    let resp = member
        .kv()
        .await
        .put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    resp.header.unwrap().revision
}

/// The value of `key` on `member` (serializable: its own replica).
pub async fn local_value(member: &Member, key: &str) -> Option<Vec<u8>> {
    let resp = member
        .kv()
        .await
        .range(RangeRequest { key: key.into(), serializable: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    resp.kvs.into_iter().next().map(|kv| kv.value)
}

/// The member's Maintenance.Status.
pub async fn status(member: &Member) -> ringkv_api::etcdserverpb::StatusResponse {
    member.maintenance().await.status(StatusRequest {}).await.unwrap().into_inner()
}

/// `root` (root role), `alice` (read-write on `/app/`), auth enabled, as
/// etcdctl would set it up.
pub async fn auth_setup(m: &Member) {
    use etcd_client::{Permission, PermissionType};
    let mut c = m.etcd().await;
    c.user_add("root", "rootpw", None).await.unwrap();
    c.role_add("root").await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.role_add("app").await.unwrap();
    let perm = Permission::new(PermissionType::Readwrite, "/app/").with_prefix();
    c.role_grant_permission("app", perm).await.unwrap();
    c.user_add("alice", "alicepw", None).await.unwrap();
    c.user_grant_role("alice", "app").await.unwrap();
    c.auth_enable().await.unwrap();
}
