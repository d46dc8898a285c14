//! The gRPC service, through our generated tonic client against a tonic
//! server on a loopback port.

use std::collections::HashMap;
use std::time::Duration;

use ringkv_api::etcdserverpb::watch_client::WatchClient;
use ringkv_api::etcdserverpb::watch_request::RequestUnion;
use ringkv_api::etcdserverpb::{
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use ringkv_api::mvccpb;
use ringkv_storage::mvcc::Revision;
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status, Streaming};

use super::*;
use crate::watch::stream::INVALID_WATCH_ID;
use crate::watch::{REQUIRE_LEADER_KEY, WatchService};

/// A watch server on a loopback port.
pub(super) struct Server {
    ctx: Arc<TestContext>,
    pub(super) hub: Arc<WatchHub>,
    pub(super) writer: Writer,
    pub(super) endpoint: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) async fn serve(config: WatchConfig) -> Server {
    let (ctx, hub, writer) = setup(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tonic::transport::Server::builder()
        .add_service(WatchService::new(Arc::clone(&hub)).into_server())
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    let task = tokio::spawn(async move { server.await.unwrap() });
    Server { ctx, hub, writer, endpoint, task }
}

/// One client stream.
pub(super) struct Client {
    requests: Option<mpsc::Sender<WatchRequest>>,
    responses: Streaming<WatchResponse>,
}

impl Client {
    async fn open(endpoint: &str, require_leader: bool) -> Result<Client, Status> {
        Client::open_with(endpoint, require_leader, None).await
    }

    /// Opens a stream whose first request, if any, is already queued when
    /// the call starts: etcd (grpc-go) sends a stream's response headers
    /// only with its first response, so a client that sends nothing until
    /// the call returns waits forever.
    pub(super) async fn open_with(
        endpoint: &str,
        require_leader: bool,
        first: Option<RequestUnion>,
    ) -> Result<Client, Status> {
        let mut client = WatchClient::connect(endpoint.to_owned()).await.unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        if let Some(request) = first {
            tx.send(WatchRequest { request_union: Some(request) }).await.unwrap();
        }
        let requests = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut request = Request::new(requests);
        if require_leader {
            request.metadata_mut().insert(REQUIRE_LEADER_KEY, MetadataValue::from_static("true"));
        }
        let responses = client.watch(request).await?.into_inner();
        Ok(Client { requests: Some(tx), responses })
    }

    pub(super) async fn send(&self, request: RequestUnion) {
        let tx = self.requests.as_ref().expect("not half-closed");
        tx.send(WatchRequest { request_union: Some(request) }).await.unwrap();
    }

    async fn create(&self, req: WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(req)).await;
    }

    /// The next response, or the status the stream ended with.
    async fn recv(&mut self) -> Result<Option<WatchResponse>, Status> {
        tokio::time::timeout(WAIT, self.responses.message()).await.expect("an answer in time")
    }

    pub(super) async fn next(&mut self) -> WatchResponse {
        self.recv().await.unwrap().expect("the stream is open")
    }

    async fn created(&mut self, req: WatchCreateRequest) -> i64 {
        self.create(req).await;
        let resp = self.next().await;
        assert!(resp.created && !resp.canceled, "{resp:?}");
        resp.watch_id
    }

    /// Events per watcher until each has its count.
    async fn collect(&mut self, want: &HashMap<i64, usize>) -> HashMap<i64, Vec<mvccpb::Event>> {
        let mut got: HashMap<i64, Vec<mvccpb::Event>> =
            want.keys().map(|&id| (id, Vec::new())).collect();
        while want.iter().any(|(id, n)| got[id].len() < *n) {
            let resp = self.next().await;
            let events = got.get_mut(&resp.watch_id).unwrap_or_else(|| panic!("{resp:?}"));
            check_events_response(&resp, events.last());
            events.extend(resp.events);
        }
        got
    }
}

#[tokio::test]
async fn a_grpc_stream_creates_replays_follows_cancels_and_reports_progress() {
    let mut server = serve(tight_config()).await;
    for i in 0..20 {
        server.writer.put(&format!("g{}", i % 3), &i.to_string());
    }
    let mut client = Client::open(&server.endpoint, false).await.unwrap();
    let live = client.created(create("g", "h", 0)).await;
    let history = client.created(WatchCreateRequest { prev_kv: true, ..create("g1", "", 3) }).await;
    let start = Revision(server.writer.revision().0 + 1);
    for i in 20..40 {
        server.writer.put(&format!("g{}", i % 3), &i.to_string());
    }
    let w = &server.writer;
    let want: HashMap<i64, Vec<mvccpb::Event>> = [
        (live, w.expected("g", "h", start, false)),
        (history, w.expected("g1", "", Revision(3), true)),
    ]
    .into_iter()
    .collect();
    let counts = want.iter().map(|(id, e)| (*id, e.len())).collect();
    assert_eq!(client.collect(&counts).await, want);

    client.send(RequestUnion::ProgressRequest(WatchProgressRequest {})).await;
    let resp = client.next().await;
    assert_eq!(resp.watch_id, INVALID_WATCH_ID);
    let header = resp.header.unwrap();
    assert_eq!(
        (header.revision, header.cluster_id, header.member_id, header.raft_term),
        (server.writer.revision().0, CLUSTER_ID, MEMBER_ID, RAFT_TERM)
    );

    client.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id: history })).await;
    let resp = client.next().await;
    assert!(resp.canceled && resp.watch_id == history, "{resp:?}");
    assert_eq!(server.hub.stats().watchers, 1);
}

#[tokio::test]
async fn hasleader_streams_fail_when_the_member_has_no_leader() {
    let config =
        WatchConfig { leader_check_interval: Duration::from_millis(20), ..WatchConfig::default() };
    let mut server = serve(config).await;
    let mut strict = Client::open(&server.endpoint, true).await.unwrap();
    let mut plain = Client::open(&server.endpoint, false).await.unwrap();
    let s = strict.created(create("l", "", 0)).await;
    let p = plain.created(create("l", "", 0)).await;
    server.writer.put("l", "1");
    assert_eq!(strict.next().await.watch_id, s);
    assert_eq!(plain.next().await.watch_id, p);

    server.ctx.set_leader(false);
    let status = match strict.recv().await {
        Ok(Some(resp)) => panic!("no response was due: {resp:?}"),
        Ok(None) => panic!("the stream must end with an error, not cleanly"),
        Err(status) => status,
    };
    assert_eq!((status.code(), status.message()), (Code::Unavailable, "etcdserver: no leader"));
    let refused = Client::open(&server.endpoint, true).await.err().expect("refused");
    assert_eq!((refused.code(), refused.message()), (Code::Unavailable, "etcdserver: no leader"));

    // Streams that did not ask for a leader go on.
    server.writer.put("l", "2");
    let resp = plain.next().await;
    assert_eq!((resp.watch_id, resp.events.len()), (p, 1));
    let mut late = Client::open(&server.endpoint, false).await.unwrap();
    late.created(create("l", "", 0)).await;

    server.ctx.set_leader(true);
    let mut again = Client::open(&server.endpoint, true).await.unwrap();
    again.created(create("l", "", 0)).await;
}

/// A member without a leader for a few checks (an election) keeps its
/// `hasleader` streams: etcd ends them only after `maxNoLeaderCnt`
/// consecutive leaderless checks, and clients (etcdctl's watch) give up
/// for good on a stream ended so.
#[tokio::test]
async fn hasleader_streams_outlive_an_election() {
    let config = WatchConfig {
        leader_check_interval: Duration::from_millis(10),
        // Far more checks than the pause below spans, however slow the
        // machine: the stream must survive it.
        leaderless_checks_max: 1000,
        ..WatchConfig::default()
    };
    let mut server = serve(config).await;
    let mut strict = Client::open(&server.endpoint, true).await.unwrap();
    let s = strict.created(create("e", "", 0)).await;
    server.ctx.set_leader(false);
    // Several checks find no leader.
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.ctx.set_leader(true);
    server.writer.put("e", "after the election");
    let resp = strict.next().await;
    assert_eq!((resp.watch_id, resp.events.len()), (s, 1), "{resp:?}");
}

#[tokio::test]
async fn progress_notify_arrives_on_the_interval_over_grpc() {
    let config = WatchConfig {
        progress_notify_interval: Duration::from_millis(30),
        ..WatchConfig::default()
    };
    let mut server = serve(config).await;
    server.writer.put("pn", "0");
    let mut client = Client::open(&server.endpoint, false).await.unwrap();
    let id =
        client.created(WatchCreateRequest { progress_notify: true, ..create("pn", "", 0) }).await;
    let resp = client.next().await;
    assert_eq!(resp.watch_id, id);
    assert!(resp.events.is_empty() && !resp.created && !resp.canceled, "{resp:?}");
    assert_eq!(resp.header.unwrap().revision, 2);
}

#[tokio::test]
async fn fragments_travel_over_grpc() {
    let config = WatchConfig { response_bytes_max: 1000, ..WatchConfig::default() };
    let mut server = serve(config).await;
    let mut client = Client::open(&server.endpoint, false).await.unwrap();
    let id = client.created(WatchCreateRequest { fragment: true, ..create("fr/", "fr0", 0) }).await;
    let value = "x".repeat(400);
    let keys: Vec<String> = (0..6).map(|i| format!("fr/{i}")).collect();
    let puts: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), value.as_str())).collect();
    let revision = server.writer.run(txn(&puts));
    let mut events = Vec::new();
    let mut pieces = 0;
    loop {
        let resp = client.next().await;
        assert_eq!(resp.watch_id, id);
        pieces += 1;
        events.extend(resp.events);
        if !resp.fragment {
            break;
        }
    }
    assert!(pieces >= 3, "{pieces}");
    assert_eq!(events, server.writer.expected("fr/", "fr0", revision, false));
}

#[tokio::test]
async fn many_streams_with_many_watchers_over_grpc() {
    let mut server = serve(WatchConfig::default()).await;
    let mut clients = Vec::new();
    for s in 0..6 {
        let mut client = Client::open(&server.endpoint, s % 2 == 0).await.unwrap();
        let mut ids = HashMap::new();
        for i in 0..25 {
            ids.insert(
                client.created(create(&format!("ms{s}/{i}"), "", 0)).await,
                format!("ms{s}/{i}"),
            );
        }
        clients.push((client, ids));
    }
    let start = Revision(server.writer.revision().0 + 1);
    for round in 0..2 {
        for s in 0..6 {
            for i in 0..25 {
                server.writer.put(&format!("ms{s}/{i}"), &format!("{round}"));
            }
        }
    }
    for (client, ids) in &mut clients {
        let want: HashMap<i64, Vec<mvccpb::Event>> = ids
            .iter()
            .map(|(id, key)| (*id, server.writer.expected(key, "", start, false)))
            .collect();
        let counts = want.iter().map(|(id, e)| (*id, e.len())).collect();
        assert_eq!(client.collect(&counts).await, want);
    }
    assert_eq!(server.hub.stats().streams, 6);
}

#[tokio::test]
async fn half_closed_streams_keep_receiving_and_closed_ones_leave_the_hub() {
    let mut server = serve(WatchConfig::default()).await;
    let mut client = Client::open(&server.endpoint, false).await.unwrap();
    let id = client.created(create("hc", "", 0)).await;
    client.requests = None; // Half-close: the client sends nothing more.
    server.writer.put("hc", "1");
    let resp = client.next().await;
    assert_eq!((resp.watch_id, resp.events.len()), (id, 1));
    assert_eq!(server.hub.stats().watchers, 1);

    drop(client);
    // The server notices the reset on its own schedule; poll for it.
    let gone = async {
        while server.hub.stats().streams > 0 || server.hub.stats().watchers > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, gone).await.expect("the stream left the hub");
}
