//! A whole ringkv member: the node thread, the peer transport, and the
//! client port serving gRPC and HTTP on one listener. See [`Server::start`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringkv_api::etcdserverpb::auth_server::AuthServer;
use ringkv_api::etcdserverpb::cluster_server::ClusterServer;
use ringkv_api::etcdserverpb::kv_server::KvServer;
use ringkv_api::etcdserverpb::lease_server::LeaseServer;
use ringkv_api::etcdserverpb::maintenance_server::MaintenanceServer;
use ringkv_api::etcdserverpb::watch_server::{Watch, WatchServer};
use ringkv_api::v3electionpb::election_server::ElectionServer;
use ringkv_api::v3lockpb::lock_server::LockServer;
use ringkv_consensus::NodeId;
use ringkv_node::{Bootstrap, InitialMember, NodeConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;
use tracing::{error, info};

use crate::api::RequestLimits;
use crate::auth::{AuthSetupError, Authenticator};
use crate::config::{ClusterState, EngineKind, HttpUrl, ServerConfig};
use crate::dashboard::Dashboard;
use crate::http::{self, gateway};
use crate::metrics::{HISTORY_INTERVAL, Metrics, SLOW_REFRESH_INTERVAL};
use crate::peer::members::{self, MemberInfo};
use crate::peer::{ClusterId, PeerTls, PeerTransport, TransportConfig, TransportError};
use crate::remote::{DebugRemoteShards, MemberDialer, NodeLocality, ShardLocality};
use crate::runtime::{NodeHandle, NodeRuntime, NodeState, StartError};
use crate::services::{
    AuthService, ClusterService, Context, ElectionService, KvForwarding, KvService, LeaseService,
    LockService, MaintenanceService, refuse_on_learner,
};
use crate::tls::{self, ReloadingServerConfig, TlsConn};
use crate::watch::{WatchRelay, WatchService};

/// How long a shutdown waits for client connections to finish: long-lived
/// streams (keep-alives, observers, watches) would otherwise hold it
/// forever. Past it they are dropped.
pub const SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(5);

/// The request timeout: etcd's `5 s + 2 × election timeout`.
pub const REQUEST_TIMEOUT_BASE: Duration = Duration::from_secs(5);

/// etcd's request timeout for `config`: [`REQUEST_TIMEOUT_BASE`] plus two
/// election timeouts.
fn request_timeout(config: &ServerConfig) -> Duration {
    REQUEST_TIMEOUT_BASE + config.election_timeout * 2
}

/// How long a joining member keeps asking the running members which member
/// it is (they may still be starting, or just applying its MemberAdd).
pub const JOIN_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two such attempts.
pub const JOIN_DISCOVERY_RETRY: Duration = Duration::from_millis(200);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The node could not open.
    #[error(transparent)]
    Node(#[from] StartError),
    /// The peer transport could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A client address could not be listened on.
    #[error(
        "cannot listen for clients on {addr}: {source} (is another process using it? see \
         --listen-client-urls)"
    )]
    ClientBind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The auth settings cannot work (JWT keys, bcrypt cost).
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    /// The TLS files cannot be used.
    #[error("TLS: {0}")]
    Tls(#[source] crate::tls::TlsError),
    /// A setting this version cannot serve.
    #[error("{0}")]
    Unsupported(String),
    /// `--initial-cluster-state existing` on an empty data directory, but
    /// no running member lists this one.
    #[error(
        "cannot join the cluster: {why}. Add this member first (etcdctl member add {name} \
         --peer-urls={urls}) and list the running members in --initial-cluster"
    )]
    Join {
        /// This member's name.
        name: String,
        /// Its advertised peer URLs.
        urls: String,
        /// What went wrong.
        why: String,
    },
}

/// Asks the running members named in `--initial-cluster` (`GET /members`
/// on their peer ports, as etcd does) which member this one is: the one
/// whose peer URLs are this member's advertised peer URLs. Returns its id
/// and the member list, whose addresses seed the transport (the node
/// learns the table itself only once it has caught up, and must answer the
/// leader before that).
async fn find_self(config: &ServerConfig) -> Result<(NodeId, Vec<MemberInfo>), ServerError> {
    let deadline = tokio::time::Instant::now() + JOIN_DISCOVERY_TIMEOUT;
    loop {
        match find_self_once(config).await {
            Ok(found) => return Ok(found),
            // A member just added may not be listed for a moment, and the
            // others may be starting too: ask again for a while.
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "member discovery failed; retrying");
                tokio::time::sleep(JOIN_DISCOVERY_RETRY).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn find_self_once(config: &ServerConfig) -> Result<(NodeId, Vec<MemberInfo>), ServerError> {
    let mine: std::collections::BTreeSet<String> =
        config.advertise_peer_urls.iter().map(ToString::to_string).collect();
    let join_error = |why: String| ServerError::Join {
        name: config.name.clone(),
        urls: mine.iter().cloned().collect::<Vec<_>>().join(","),
        why,
    };
    let mut problems = Vec::new();
    for (name, urls) in config.initial_cluster.iter() {
        if name == config.name {
            continue;
        }
        for url in urls {
            match members::fetch_with(url, config.peer_tls.as_ref()).await {
                Ok(list) => {
                    let me = list.iter().find(|m| {
                        m.peer_urls.iter().cloned().collect::<std::collections::BTreeSet<_>>()
                            == mine
                    });
                    return match me.and_then(MemberInfo::id) {
                        Some(id) => Ok((NodeId(id), list)),
                        None => Err(join_error(format!(
                            "{url} lists no member with this member's peer URLs"
                        ))),
                    };
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
    }
    if problems.is_empty() {
        problems.push("--initial-cluster names no other member".to_owned());
    }
    Err(join_error(problems.join("; ")))
}

/// How a member starts: as a founder (or restarting, where the bootstrap is
/// ignored), or joining a running cluster as the member `MemberAdd` made.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Found the cluster from `--initial-cluster`, or restart.
    Found,
    /// Join as this member.
    Join(NodeId),
}

/// The node configuration a server configuration asks for, with its
/// keyspace (`--shards`, `--hash-key-segments`).
///
/// # Errors
/// None today: every configuration that parsed makes a node
/// configuration (the node checks the keyspace against the one its
/// cluster was created with when it opens).
pub fn node_config(config: &ServerConfig, start: Start) -> Result<NodeConfig, ServerError> {
    let members: Vec<InitialMember> = config
        .initial_cluster
        .iter()
        .map(|(name, urls)| InitialMember {
            name: name.to_owned(),
            peer_urls: urls.iter().map(ToString::to_string).collect(),
        })
        .collect();
    // On restart the bootstrap is ignored (as etcd ignores its
    // --initial-cluster flags); the stored identity is used.
    let bootstrap = match start {
        Start::Found => Bootstrap::NewCluster { members },
        Start::Join(id) => Bootstrap::Join { id },
    };
    let peer_urls: Vec<String> =
        config.advertise_peer_urls.iter().map(ToString::to_string).collect();
    let client_urls: Vec<String> =
        config.advertise_client_urls.iter().map(ToString::to_string).collect();
    let mut node = NodeConfig::new(
        config.name.clone(),
        config.initial_cluster_token.clone(),
        peer_urls,
        client_urls,
        bootstrap,
    );
    let heartbeat = config.heartbeat_interval;
    node.tick_interval = heartbeat;
    node.heartbeat_ticks = 1;
    node.election_ticks = (config.election_timeout.as_millis() / heartbeat.as_millis().max(1))
        .try_into()
        .unwrap_or(u32::MAX);
    node.request_timeout = request_timeout(config);
    node.snapshot_count = config.snapshot_count;
    node.quota_backend_bytes = config.quota_backend_bytes;
    node.store.cache_bytes = usize::try_from(config.backend_cache_bytes).unwrap_or(usize::MAX);
    node.request_bytes_max = config.max_request_bytes;
    node.seed = rand::random();
    node.keyspace = config.keyspace();
    node.replicas = config.replicas;
    node.max_concurrent_moves = config.max_concurrent_moves;
    node.placement_moves = config.placement_moves;
    node.zone = config.zone.clone();
    node.move_bytes_per_second = config.move_bytes_per_second;
    node.down_timeout = config.down_timeout;
    Ok(node)
}

/// The peer transport's cluster identity: the token alone, since a member
/// that joins knows the token before it knows the founding members (from
/// which the cluster id proper is derived).
pub fn transport_cluster_id(token: &str) -> ClusterId {
    ClusterId(ringkv_node::cluster_id(token, &Default::default()))
}

/// The peer port's TLS: all listeners `https://` with the peer files, or
/// none.
fn peer_tls(config: &ServerConfig) -> Result<Option<PeerTls>, ServerError> {
    let secure = config.listen_peer_urls.iter().filter(|u| u.is_tls()).count();
    match (&config.peer_tls, secure) {
        (None, _) => Ok(None),
        (Some(_), 0) => Err(ServerError::Unsupported(
            "--peer-cert-file is given but every --listen-peer-urls is http://: use https:// \
             peer URLs to serve peers over TLS"
                .to_owned(),
        )),
        (Some(_), n) if n != config.listen_peer_urls.len() => Err(ServerError::Unsupported(
            "--listen-peer-urls mixes http:// and https://: a member serves peers over TLS on \
             all its peer URLs or on none"
                .to_owned(),
        )),
        (Some(files), _) => {
            let server = ReloadingServerConfig::new(
                files.clone(),
                &[],
                ("--peer-client-cert-auth", "--peer-trusted-ca-file"),
            )
            .map_err(ServerError::Tls)?;
            Ok(Some(PeerTls { server: Arc::new(server), files: files.clone() }))
        }
    }
}

/// Whether `dir` holds a member's state already (a restart).
fn has_state(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// A running member.
#[derive(Debug)]
pub struct Server {
    node: Option<NodeRuntime>,
    handle: NodeHandle,
    transport: PeerTransport,
    client_addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    /// Opens the node (recovering its data directory, or founding the
    /// cluster on an empty one), starts the peer transport and serves
    /// clients. Returns once everything listens.
    ///
    /// # Errors
    /// See [`ServerError`].
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let metrics = Metrics::new();
        let restart = has_state(&config.data_dir);
        let (start, seed_peers) = match config.initial_cluster_state {
            ClusterState::Existing if !restart => {
                let (id, list) = find_self(&config).await?;
                info!(member = %id, "joining the running cluster");
                (Start::Join(id), list)
            }
            _ => (Start::Found, Vec::new()),
        };
        let node_config = node_config(&config, start)?;
        let lease_ttl_min_seconds = node_config.lease_ttl_min_seconds();
        let engine = match config.engine {
            EngineKind::Raft => ringkv_node::EngineKind::Raft,
            EngineKind::Paxos => ringkv_node::EngineKind::Paxos,
        };
        let node =
            NodeRuntime::start(engine, node_config, &config.data_dir, metrics.clone()).await?;
        let handle = node.handle().clone();
        let member = node.member_id();
        metrics.set_info(member, &config.name);
        metrics.attach_watch_hubs(Arc::clone(handle.watch_hubs()));
        let sink_handle = handle.clone();
        let peer_tls = peer_tls(&config)?;
        let transport = PeerTransport::start_with_tls(
            TransportConfig {
                cluster: transport_cluster_id(&config.initial_cluster_token),
                node: member,
                listen: config.listen_peer_addrs.clone(),
            },
            peer_tls,
            move |event| sink_handle.deliver_peer_event(event),
        )
        .await?;
        node.link().bind(transport.clone());
        metrics.attach_transport(&transport);
        for m in seed_peers {
            let urls: Vec<HttpUrl> = m.peer_urls.iter().filter_map(|u| u.parse().ok()).collect();
            if let Some(id) = m.id().map(NodeId)
                && id != member
                && !urls.is_empty()
            {
                transport.set_peer(id, urls)?;
            }
        }
        let members_state = Arc::clone(handle.state());
        transport.serve_members(Arc::new(move || {
            members_state
                .members()
                .into_iter()
                .map(|m| MemberInfo {
                    id: format!("{:016x}", m.id.0),
                    name: m.name,
                    peer_urls: m.peer_urls,
                    client_urls: m.client_urls,
                    is_learner: m.is_learner,
                })
                .collect()
        }));

        let limits = RequestLimits {
            txn_ops_max: usize::try_from(config.max_txn_ops).unwrap_or(usize::MAX),
            request_bytes_max: usize::try_from(config.max_request_bytes).unwrap_or(usize::MAX),
            lease_ttl_min_seconds,
        };
        let shutdown = CancellationToken::new();
        let leader_loss_grace = config.election_timeout * crate::watch::LEADERLESS_CHECKS_MAX;
        let authenticator = Arc::new(Authenticator::new(config.auth.clone())?);
        // Where each data shard is served from: the node's placement, or
        // the test-only stand-in.
        let locality: Arc<dyn ShardLocality> = if config.debug_remote_shards {
            tracing::warn!(
                refuse_forwarded = config.debug_refuse_forwarded,
                "--debug-remote-shards: every watch and KV request on a data shard is served by \
                 another member (test only)"
            );
            Arc::new(DebugRemoteShards::new(
                Arc::clone(handle.state()),
                config.debug_local_shards.iter().copied().map(ringkv_consensus::ShardId).collect(),
                config.debug_refuse_forwarded,
            ))
        } else {
            Arc::new(NodeLocality::new(handle.clone()))
        };
        let dialer = MemberDialer::new(config.client_tls.clone());
        let forwarding =
            KvForwarding::new(Arc::clone(&locality), Arc::clone(&dialer), request_timeout(&config));
        let ctx = Context::new(handle.clone(), limits, authenticator)
            .with_leader_loss_grace(leader_loss_grace)
            .with_forwarding(forwarding);
        let relay = WatchRelay::new(locality, dialer);
        let watch = Arc::new(
            WatchService::with_auth(Arc::clone(handle.watch_hubs()), ctx.clone())
                .with_relay(relay)
                .with_shutdown(shutdown.clone()),
        );
        let services = gateway::Services {
            kv: Arc::new(KvService::new(ctx.clone())),
            lease: Arc::new(LeaseService::new(ctx.clone())),
            cluster: Arc::new(ClusterService::new(ctx.clone())),
            maintenance: Arc::new(MaintenanceService::new(ctx.clone())),
            lock: Arc::new(LockService::new(ctx.clone())),
            election: Arc::new(ElectionService::new(ctx.clone())),
            auth: Arc::new(AuthService::new(ctx.clone())),
            watch: Arc::clone(&watch) as Arc<dyn Watch>,
            body_bytes_max: limits.grpc_message_bytes_max(),
            state: Arc::clone(handle.state()),
        };
        let routes = grpc_routes(&services, &watch, limits.grpc_message_bytes_max());
        let router = metrics
            .instrument_grpc(refuse_on_learner(
                routes.into_axum_router(),
                Arc::clone(handle.state()),
            ))
            .merge(http::router(ctx.clone(), services))
            .merge(Dashboard::new(ctx, u32::try_from(config.shards).unwrap_or(u32::MAX)).router())
            .fallback(http::fallback);
        let routes = Routes::from(router);

        let client_tls = match &config.client_tls {
            Some(files) => Some(Arc::new(
                ReloadingServerConfig::new(
                    files.clone(),
                    &tls::CLIENT_ALPN,
                    ("--client-cert-auth", "--trusted-ca-file"),
                )
                .map_err(ServerError::Tls)?,
            )),
            None => None,
        };
        let mut listeners = Vec::new();
        let mut client_addrs = Vec::new();
        for (i, &addr) in config.listen_client_addrs.iter().enumerate() {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::ClientBind { addr, source })?;
            client_addrs.push(
                listener.local_addr().map_err(|source| ServerError::ClientBind { addr, source })?,
            );
            let secure = config.listen_client_urls.get(i).is_some_and(HttpUrl::is_tls);
            listeners.push((listener, if secure { client_tls.clone() } else { None }));
        }
        let tasks = TaskTracker::new();
        tasks.spawn(sample_counters(metrics.clone(), shutdown.clone()));
        tasks.spawn(refresh_slow_metrics(
            metrics.clone(),
            handle.clone(),
            config.data_dir.clone(),
            shutdown.clone(),
        ));
        if let Some(policy) = config.auto_compaction {
            tasks.spawn(crate::compactor::run(handle.clone(), policy, shutdown.clone()));
        }
        for (listener, tls_config) in listeners {
            let routes = routes.clone();
            let stop = shutdown.clone();
            let server = tonic::transport::Server::builder().accept_http1(true).add_routes(routes);
            match tls_config {
                None => {
                    tasks.spawn(async move {
                        // Without TCP_NODELAY a small response waits for the
                        // client's delayed ACK (Nagle): ~40 ms per unary call.
                        let incoming = tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true));
                        let served = server
                            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                            .await;
                        if let Err(error) = served {
                            error!(%error, "client listener failed");
                        }
                    });
                }
                Some(tls_config) => {
                    let incoming = tls_incoming(listener, tls_config, &tasks, stop.clone());
                    tasks.spawn(async move {
                        let served = server
                            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                            .await;
                        if let Err(error) = served {
                            error!(%error, "client listener failed");
                        }
                    });
                }
            }
        }
        info!(
            member = %member,
            name = %config.name,
            clients = ?client_addrs,
            peers = ?transport.local_addrs(),
            restart,
            "ringkv member serving"
        );
        Ok(Server { node: Some(node), handle, transport, client_addrs, shutdown, tasks })
    }

    /// The addresses clients are served on (real ports where 0 was asked).
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    /// The addresses peers connect to.
    pub fn peer_addrs(&self) -> &[SocketAddr] {
        self.transport.local_addrs()
    }

    /// This member's id.
    pub fn member_id(&self) -> NodeId {
        self.handle.state().member_id()
    }

    /// The node's published state.
    pub fn state(&self) -> &Arc<NodeState> {
        self.handle.state()
    }

    /// The handle on the node.
    pub fn node(&self) -> &NodeHandle {
        &self.handle
    }

    /// Stops serving clients, stops the node (its current round finishes,
    /// fsync included) and closes the transport.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE_PERIOD, self.tasks.wait()).await.is_err() {
            info!(grace = ?SHUTDOWN_GRACE_PERIOD, "client streams still open; closing them");
        }
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
        self.transport.shutdown().await;
        info!(member = %self.handle.state().member_id(), "ringkv member stopped");
    }
}

/// The gRPC services, each with the receive limit of
/// [`RequestLimits::grpc_message_bytes_max`].
fn grpc_routes(
    s: &gateway::Services,
    watch: &Arc<WatchService>,
    message_bytes_max: usize,
) -> Routes {
    let mut builder = Routes::builder();
    builder
        .add_service(
            KvServer::from_arc(Arc::clone(&s.kv)).max_decoding_message_size(message_bytes_max),
        )
        .add_service(
            LeaseServer::from_arc(Arc::clone(&s.lease))
                .max_decoding_message_size(message_bytes_max),
        )
        .add_service(
            ClusterServer::from_arc(Arc::clone(&s.cluster))
                .max_decoding_message_size(message_bytes_max),
        )
        .add_service(
            MaintenanceServer::from_arc(Arc::clone(&s.maintenance))
                .max_decoding_message_size(message_bytes_max)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            LockServer::from_arc(Arc::clone(&s.lock)).max_decoding_message_size(message_bytes_max),
        )
        .add_service(
            ElectionServer::from_arc(Arc::clone(&s.election))
                .max_decoding_message_size(message_bytes_max),
        )
        .add_service(
            WatchServer::from_arc(Arc::clone(watch)).max_decoding_message_size(message_bytes_max),
        )
        .add_service(
            AuthServer::from_arc(Arc::clone(&s.auth)).max_decoding_message_size(message_bytes_max),
        );
    builder.routes()
}

/// Records the dashboard's counter samples every [`HISTORY_INTERVAL`]
/// until `stop`.
async fn sample_counters(metrics: Metrics, stop: CancellationToken) {
    let mut every = tokio::time::interval(HISTORY_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => metrics.record_sample(),
        }
    }
}

/// Refreshes, every [`SLOW_REFRESH_INTERVAL`] until `stop`, the metrics
/// too costly to compute per scrape (off the async workers: both read
/// files).
async fn refresh_slow_metrics(
    metrics: Metrics,
    node: NodeHandle,
    data_dir: std::path::PathBuf,
    stop: CancellationToken,
) {
    loop {
        let (metrics, node, dir) = (metrics.clone(), node.clone(), data_dir.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let shards: Vec<_> =
                node.state().shard_reports().iter().map(|s| s.status.shard).collect();
            metrics.refresh_slow(&dir, node.store(), &shards);
        })
        .await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SLOW_REFRESH_INTERVAL) => {}
        }
    }
}

/// TLS connections accepted on `listener`: each handshake runs in its own
/// task (a slow client delays nobody) and is bounded by
/// [`tls::TLS_HANDSHAKE_TIMEOUT`]; refused handshakes (no certificate, one
/// from another CA, plaintext) are logged and dropped.
fn tls_incoming(
    listener: TcpListener,
    config: Arc<ReloadingServerConfig>,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> impl futures_util::Stream<Item = Result<TlsConn, std::io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<TlsConn>(TLS_ACCEPTED_QUEUED_MAX);
    let handshakes = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, remote) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of descriptors or similar: pause rather than spin.
                    tracing::warn!(%error, "accepting a client connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // As on plaintext listeners: no Nagle delay on small responses.
            let _ = stream.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(config.current());
            let tx = tx.clone();
            handshakes.spawn(async move {
                match tokio::time::timeout(tls::TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(TlsConn::new(tls, remote)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(client = %remote, %error, "TLS handshake refused");
                    }
                    Err(_) => tracing::warn!(client = %remote, "TLS handshake timed out"),
                }
            });
        }
    });
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|conn| (Ok(conn), rx)) },
    )
}

/// Handshaken TLS connections waiting for the server to take them.
pub const TLS_ACCEPTED_QUEUED_MAX: usize = 64;

/// Resolves on SIGINT or SIGTERM: when to shut down gracefully.
///
/// # Errors
/// The signal handlers could not be installed.
pub async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => info!("SIGTERM: shutting down"),
        _ = interrupt.recv() => info!("SIGINT: shutting down"),
    }
    Ok(())
}
