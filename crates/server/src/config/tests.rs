use std::io::Write;

use super::*;

type Env = Vec<(String, String)>;

fn no_env() -> Env {
    Vec::new()
}

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn parse(args: &[&str], env: Env) -> Result<ServerConfig, ConfigError> {
    parse_from(std::iter::once("ringkv").chain(args.iter().copied()), env)
}

fn url(text: &str) -> HttpUrl {
    text.parse().unwrap()
}

fn file(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    file
}

#[test]
fn no_arguments_is_a_single_local_node() {
    let config = parse(&[], no_env()).unwrap();
    assert_eq!(config.name, "default");
    assert_eq!(config.data_dir, PathBuf::from("./ringkv-data"));
    assert_eq!(config.listen_client_addrs, vec!["127.0.0.1:2379".parse().unwrap()]);
    assert_eq!(config.advertise_client_urls, vec![url("http://127.0.0.1:2379")]);
    assert_eq!(config.listen_peer_addrs, vec!["127.0.0.1:2380".parse().unwrap()]);
    assert_eq!(config.advertise_peer_urls, vec![url("http://127.0.0.1:2380")]);
    assert_eq!(config.initial_cluster.to_string(), "default=http://127.0.0.1:2380");
    assert_eq!(config.initial_cluster_state, ClusterState::New);
    assert_eq!(config.initial_cluster_token, "ringkv-cluster");
    assert_eq!(config.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(config.election_timeout, Duration::from_millis(1000));
    assert_eq!(config.snapshot_count, 100_000);
    assert_eq!(config.quota_backend_bytes, 2 << 30);
    assert_eq!(config.max_request_bytes, 1_572_864);
    assert_eq!(config.max_txn_ops, 128);
    assert_eq!(config.log_level, LogLevel::Info);
    assert_eq!(config.log_format, LogFormat::Human);
    assert_eq!(config.engine, EngineKind::Raft);
    assert_eq!(config.shards, 1);
    assert!(config.warnings.is_empty());
}

#[test]
fn every_etcd_flag_is_accepted_in_both_spellings() {
    let config = parse(
        &[
            "--name=infra0",
            "--data-dir",
            "/var/lib/ringkv",
            "--listen-client-urls=http://0.0.0.0:2379",
            "--advertise-client-urls",
            "http://10.0.1.10:2379",
            "--listen-peer-urls=http://10.0.1.10:2380",
            "--initial-advertise-peer-urls=http://10.0.1.10:2380",
            "--initial-cluster=infra0=http://10.0.1.10:2380,infra1=http://10.0.1.11:2380",
            "--initial-cluster-state=existing",
            "--initial-cluster-token=prod",
            "--heartbeat-interval=250",
            "--election-timeout=2500",
            "--snapshot-count=5000",
            "--quota-backend-bytes=4294967296",
            "--max-request-bytes=1048576",
            "--max-txn-ops=64",
            "--log-level=warn",
            "--log-format=json",
            "--engine=paxos",
            "--shards=8",
        ],
        no_env(),
    )
    .unwrap();
    assert_eq!(config.name, "infra0");
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/ringkv"));
    assert_eq!(config.listen_client_addrs, vec!["0.0.0.0:2379".parse().unwrap()]);
    assert_eq!(config.advertise_client_urls, vec![url("http://10.0.1.10:2379")]);
    assert_eq!(config.initial_cluster.len(), 2);
    assert_eq!(config.initial_cluster_state, ClusterState::Existing);
    assert_eq!(config.initial_cluster_token, "prod");
    assert_eq!(config.heartbeat_interval, Duration::from_millis(250));
    assert_eq!(config.election_timeout, Duration::from_millis(2500));
    assert_eq!(config.snapshot_count, 5000);
    assert_eq!(config.quota_backend_bytes, 4 << 30);
    assert_eq!(config.max_request_bytes, 1 << 20);
    assert_eq!(config.max_txn_ops, 64);
    assert_eq!(config.log_level, LogLevel::Warn);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.engine, EngineKind::Paxos);
    assert_eq!(config.shards, 8);
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let toml = file(
        r#"
        name = "from-file"
        data-dir = "/from/file"
        heartbeat-interval = 200
        election-timeout = 4000
        initial-cluster = "from-file=http://127.0.0.1:2380,from-env=http://127.0.0.1:2381,from-flag=http://127.0.0.1:2382"
        "#,
    );
    let path = toml.path().to_str().unwrap();
    let config = parse(
        &[
            "--config-file",
            path,
            "--name",
            "from-flag",
            "--initial-advertise-peer-urls=http://127.0.0.1:2382",
        ],
        env(&[("RINGKV_NAME", "from-env"), ("RINGKV_HEARTBEAT_INTERVAL", "300")]),
    )
    .unwrap();
    assert_eq!(config.name, "from-flag", "flag over environment and file");
    assert_eq!(config.heartbeat_interval, Duration::from_millis(300), "environment over file");
    assert_eq!(config.data_dir, PathBuf::from("/from/file"), "file over default");
    assert_eq!(config.election_timeout, Duration::from_millis(4000), "file over default");
    assert_eq!(config.snapshot_count, DEFAULT_SNAPSHOT_COUNT, "default when nothing is given");
    assert_eq!(
        config.warnings,
        vec![ConfigWarning::ShadowedEnv { var: "RINGKV_NAME".into(), flag: "name".into() }]
    );
}

#[test]
fn every_flag_can_come_from_the_environment() {
    let dir = "/srv/kv";
    let config = parse(
        &[],
        env(&[
            ("RINGKV_NAME", "n1"),
            ("RINGKV_DATA_DIR", dir),
            ("RINGKV_LISTEN_CLIENT_URLS", "http://127.0.0.1:3379, http://[::1]:3379"),
            ("RINGKV_LISTEN_PEER_URLS", "http://127.0.0.1:3380"),
            ("RINGKV_INITIAL_CLUSTER", "n1=http://127.0.0.1:3380"),
            ("RINGKV_INITIAL_CLUSTER_STATE", "existing"),
            ("RINGKV_ENGINE", "paxos"),
            ("RINGKV_SHARDS", "16"),
            ("RINGKV_LOG_LEVEL", "fatal"),
            ("RINGKV_MAX_TXN_OPS", "7"),
            ("PATH", "/usr/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(config.name, "n1");
    assert_eq!(config.data_dir, PathBuf::from(dir));
    assert_eq!(
        config.listen_client_addrs,
        vec!["127.0.0.1:3379".parse().unwrap(), "[::1]:3379".parse().unwrap()]
    );
    assert_eq!(config.advertise_client_urls.len(), 2, "advertised as listened");
    assert_eq!(config.advertise_peer_urls, vec![url("http://127.0.0.1:3380")]);
    assert_eq!(config.initial_cluster_state, ClusterState::Existing);
    assert_eq!(config.engine, EngineKind::Paxos);
    assert_eq!(config.shards, 16);
    assert_eq!(config.log_level, LogLevel::Error, "etcd's fatal means error");
    assert_eq!(config.max_txn_ops, 7);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let error = parse(&[], env(&[("RINGKV_HEARTBEAT_INTERVAL", "soon")])).unwrap_err();
    assert!(matches!(&error, ConfigError::Env { var, .. } if var == "RINGKV_HEARTBEAT_INTERVAL"));
    let message = error.to_string();
    assert!(message.starts_with("environment variable RINGKV_HEARTBEAT_INTERVAL: "), "{message}");
    assert!(message.contains("soon"), "{message}");

    let error = parse(&[], env(&[("RINGKV_ENGINE", "zab")])).unwrap_err();
    assert!(matches!(&error, ConfigError::Env { var, .. } if var == "RINGKV_ENGINE"), "{error}");
}

#[test]
fn unknown_ringkv_variables_are_warned_about_not_fatal() {
    let config = parse(&[], env(&[("RINGKV_DATADIR", "/typo"), ("HOME", "/root")])).unwrap();
    assert_eq!(config.warnings, vec![ConfigWarning::UnknownEnv { var: "RINGKV_DATADIR".into() }]);
    assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
}

#[cfg(unix)]
#[test]
fn a_non_utf8_environment_value_is_refused() {
    use std::os::unix::ffi::OsStringExt;
    let env = vec![(OsString::from("RINGKV_NAME"), OsString::from_vec(vec![0xff, 0xfe]))];
    let error = parse_from(["ringkv"], env).unwrap_err();
    assert!(matches!(error, ConfigError::EnvNotUtf8 { var } if var == "RINGKV_NAME"));
}

#[test]
fn the_config_file_takes_lists_as_strings_or_arrays() {
    let toml = file(
        r#"
        name = "a"
        listen-client-urls = ["http://127.0.0.1:12379", "http://127.0.0.1:22379"]
        listen-peer-urls = "http://127.0.0.1:12380"
        initial-cluster = ["a=http://127.0.0.1:12380", "b=http://127.0.0.1:22380"]
        initial-cluster-state = "new"
        engine = "raft"
        log-level = "debug"
        shards = 4
        "#,
    );
    let config = parse(&[], env(&[("RINGKV_CONFIG_FILE", toml.path().to_str().unwrap())])).unwrap();
    assert_eq!(config.listen_client_addrs.len(), 2);
    assert_eq!(config.listen_peer_addrs, vec!["127.0.0.1:12380".parse().unwrap()]);
    assert_eq!(config.initial_cluster.urls("b"), Some(&[url("http://127.0.0.1:22380")][..]));
    assert_eq!(config.log_level, LogLevel::Debug);
    assert_eq!(config.shards, 4);
}

#[test]
fn config_file_problems_name_the_file_and_the_key() {
    let toml = file("name = \"a\"\ndatadir = \"/typo\"\n");
    let path = toml.path().to_str().unwrap();
    let error = parse(&["--config-file", path], no_env()).unwrap_err();
    assert!(matches!(error, ConfigError::ParseFile { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains(path) && message.contains("datadir"), "{message}");

    let toml = file("heartbeat-interval = \"fast\"\n");
    let error = parse(&["--config-file", toml.path().to_str().unwrap()], no_env()).unwrap_err();
    assert!(matches!(error, ConfigError::ParseFile { .. }), "{error}");

    let toml = file("config-file = \"/other.toml\"\n");
    let error = parse(&["--config-file", toml.path().to_str().unwrap()], no_env()).unwrap_err();
    assert!(matches!(error, ConfigError::ParseFile { .. }), "a file cannot name another: {error}");

    let error = parse(&["--config-file", "/nonexistent/ringkv.toml"], no_env()).unwrap_err();
    assert!(matches!(error, ConfigError::ReadFile { .. }), "{error}");
    assert!(error.to_string().contains("/nonexistent/ringkv.toml"));

    let toml = file(&"#".repeat(usize::try_from(CONFIG_FILE_BYTES_MAX).unwrap() + 1));
    let error = parse(&["--config-file", toml.path().to_str().unwrap()], no_env()).unwrap_err();
    assert!(matches!(error, ConfigError::FileTooLarge { .. }), "{error}");
}

#[test]
fn initial_cluster_takes_etcd_pairs_with_repeated_names() {
    let cluster: InitialCluster =
        "infra0=http://10.0.1.10:2380, infra1=http://10.0.1.11:2380,infra0=http://10.0.1.12:2380,"
            .parse()
            .unwrap();
    assert_eq!(cluster.len(), 2);
    assert_eq!(
        cluster.urls("infra0"),
        Some(&[url("http://10.0.1.10:2380"), url("http://10.0.1.12:2380")][..])
    );
    assert_eq!(
        cluster.to_string(),
        "infra0=http://10.0.1.10:2380,infra0=http://10.0.1.12:2380,infra1=http://10.0.1.11:2380"
    );
    assert_eq!(cluster.to_string().parse::<InitialCluster>().unwrap(), cluster);

    let config = parse(
        &[
            "--name=infra0",
            "--listen-peer-urls=http://0.0.0.0:2380",
            "--initial-advertise-peer-urls=http://10.0.1.12:2380,http://10.0.1.10:2380",
            "--initial-cluster=infra0=http://10.0.1.10:2380,infra1=http://10.0.1.11:2380,infra0=http://10.0.1.12:2380",
        ],
        no_env(),
    )
    .unwrap();
    assert_eq!(config.initial_cluster, cluster, "URL order per member does not matter");
}

#[test]
fn malformed_initial_clusters_say_which_entry() {
    let parse_cluster = |text: &str| text.parse::<InitialCluster>().unwrap_err();
    assert_eq!(parse_cluster(""), InitialClusterError::Empty);
    assert_eq!(parse_cluster(" , "), InitialClusterError::Empty);
    assert_eq!(
        parse_cluster("a=http://h:1,http://h:2"),
        InitialClusterError::MissingEquals { entry: "http://h:2".into() }
    );
    assert_eq!(
        parse_cluster("=http://h:1"),
        InitialClusterError::EmptyName { entry: "=http://h:1".into() }
    );
    assert!(matches!(
        parse_cluster("a=h:1"),
        InitialClusterError::Url { name, source: UrlError::MissingScheme { .. } } if name == "a"
    ));
    assert_eq!(
        parse_cluster("a=http://h:1,b=http://h:1"),
        InitialClusterError::DuplicateUrl {
            url: url("http://h:1"),
            first: "a".into(),
            second: "b".into()
        }
    );
    let error =
        parse(&["--initial-cluster=default=http://127.0.0.1:2380,x"], no_env()).unwrap_err();
    assert!(matches!(
        error,
        ConfigError::InitialCluster(InitialClusterError::MissingEquals { .. })
    ));
    assert!(error.to_string().starts_with("--initial-cluster: "), "{error}");
}

#[test]
fn the_initial_cluster_must_name_this_node_with_its_advertised_urls() {
    let error =
        parse(&["--name=n9", "--initial-cluster=n1=http://127.0.0.1:2380"], no_env()).unwrap_err();
    assert!(matches!(&error, ConfigError::NameNotInCluster { name, .. } if name == "n9"));
    assert!(error.to_string().contains("n9=<its peer URL>"), "{error}");

    let error = parse(&["--initial-cluster=default=http://127.0.0.1:9999"], no_env()).unwrap_err();
    assert!(matches!(error, ConfigError::PeerUrlsMismatch { .. }), "{error}");
    assert!(error.to_string().contains("http://127.0.0.1:9999"), "{error}");
}

#[test]
fn urls_are_checked_for_their_purpose() {
    let error = parse(&["--listen-client-urls=unixs://127.0.0.1:2379"], no_env()).unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::Url {
                flag: "listen-client-urls",
                source: UrlError::TlsUnsupported { .. }
            }
        ),
        "{error}"
    );
    let error = parse(&["--listen-client-urls=https://127.0.0.1:2379"], no_env()).unwrap_err();
    assert!(matches!(error, ConfigError::TlsFilesMissing { .. }), "{error}");
    let error = parse(&["--listen-peer-urls=http://db.example:2380"], no_env()).unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::Url { flag: "listen-peer-urls", source: UrlError::NotBindable { .. } }
        ),
        "{error}"
    );
    let error = parse(&["--listen-client-urls= , "], no_env()).unwrap_err();
    assert!(matches!(error, ConfigError::NoUrls { flag: "listen-client-urls" }), "{error}");

    let error = parse(&["--listen-client-urls=http://0.0.0.0:2379"], no_env()).unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::AdvertiseRequired { advertise_flag: "advertise-client-urls", .. }
        ),
        "{error}"
    );
    let error = parse(&["--advertise-client-urls=http://0.0.0.0:2379"], no_env()).unwrap_err();
    assert!(matches!(error, ConfigError::UnspecifiedAdvertise { .. }), "{error}");
    let error = parse(&["--listen-peer-urls=http://127.0.0.1:0"], no_env()).unwrap_err();
    assert!(
        matches!(error, ConfigError::ZeroPortAdvertise { flag: "initial-advertise-peer-urls", .. }),
        "{error}"
    );
    // Advertised host names are fine: they are resolved when dialing.
    let config = parse(
        &[
            "--advertise-client-urls=http://kv-0.kv.default.svc:2379",
            "--initial-advertise-peer-urls=http://kv-0.kv.default.svc:2380",
        ],
        no_env(),
    )
    .unwrap();
    assert_eq!(config.initial_cluster.to_string(), "default=http://kv-0.kv.default.svc:2380");
}

#[test]
fn timing_must_leave_room_for_late_heartbeats() {
    let error =
        parse(&["--heartbeat-interval=100", "--election-timeout=400"], no_env()).unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::ElectionTimeoutTooShort { election_ms: 400, heartbeat_ms: 100 }
        ),
        "{error}"
    );
    let error =
        parse(&["--heartbeat-interval=1000", "--election-timeout=1000"], no_env()).unwrap_err();
    assert!(matches!(error, ConfigError::ElectionTimeoutTooShort { .. }), "{error}");
    assert!(parse(&["--heartbeat-interval=100", "--election-timeout=500"], no_env()).is_ok());
    let error = parse(&["--election-timeout=50001"], no_env()).unwrap_err();
    assert!(matches!(error, ConfigError::OutOfRange { flag: "election-timeout", .. }), "{error}");
    let error = parse(&["--heartbeat-interval=0"], no_env()).unwrap_err();
    assert!(matches!(error, ConfigError::OutOfRange { flag: "heartbeat-interval", .. }), "{error}");
}

#[test]
fn limits_are_enforced_with_the_allowed_range() {
    for (flag, value) in [
        ("snapshot-count", "0".to_owned()),
        ("max-request-bytes", "0".to_owned()),
        ("max-request-bytes", (MAX_REQUEST_BYTES_LIMIT + 1).to_string()),
        ("max-txn-ops", "0".to_owned()),
        ("max-txn-ops", (MAX_TXN_OPS_LIMIT + 1).to_string()),
        ("shards", "0".to_owned()),
        ("shards", (SHARDS_MAX + 1).to_string()),
        ("hash-key-segments", (HASH_KEY_SEGMENTS_MAX + 1).to_string()),
    ] {
        let error = parse(&[&format!("--{flag}={value}")], no_env()).unwrap_err();
        assert!(
            matches!(&error, ConfigError::OutOfRange { flag: f, .. } if *f == flag),
            "--{flag}={value}: {error}"
        );
        assert!(error.to_string().contains(&value), "{error}");
    }
    let config = parse(&[&format!("--shards={SHARDS_MAX}")], no_env()).unwrap();
    assert_eq!(config.shards, SHARDS_MAX);
}

#[test]
fn shards_and_the_hash_key_rule_make_the_keyspace() {
    let config = parse(&[], no_env()).unwrap();
    assert_eq!(config.keyspace(), Keyspace::new(1, HashKeyRule::WholeKey).unwrap());
    let config = parse(&["--shards=64", "--hash-key-segments=2"], no_env()).unwrap();
    let two = HashKeyRule::Segments(NonZeroU32::new(2).unwrap());
    assert_eq!(config.keyspace(), Keyspace::new(64, two).unwrap());
    // The node hosts and routes by the same keyspace.
    let node = crate::server::node_config(&config, crate::server::Start::Found).unwrap();
    assert_eq!(node.keyspace, config.keyspace());
    let env = vec![("RINGKV_HASH_KEY_SEGMENTS".to_owned(), "0".to_owned())];
    let config = parse(&["--shards=8"], env).unwrap();
    assert_eq!(config.keyspace().rule(), HashKeyRule::WholeKey);
}

#[test]
fn replicas_and_concurrent_moves_reach_the_node() {
    let config = parse(&[], no_env()).unwrap();
    assert_eq!(u64::from(config.replicas), DEFAULT_REPLICAS);
    assert_eq!(u64::from(config.max_concurrent_moves), DEFAULT_MAX_CONCURRENT_MOVES);
    let config = parse(&["--replicas=5", "--max-concurrent-moves=2"], no_env()).unwrap();
    let node = crate::server::node_config(&config, crate::server::Start::Found).unwrap();
    assert_eq!((node.replicas, node.max_concurrent_moves), (5, 2));
    assert!(node.placement_moves, "moves are on unless turned off");
    let config = parse(&["--placement-moves=false"], no_env()).unwrap();
    let node = crate::server::node_config(&config, crate::server::Start::Found).unwrap();
    assert!(!node.placement_moves);
    let config = parse(&["--placement-moves"], no_env()).unwrap();
    let node = crate::server::node_config(&config, crate::server::Start::Found).unwrap();
    assert!(node.placement_moves);
    assert_eq!(node.down_timeout, ringkv_node::DOWN_TIMEOUT_DEFAULT);
    let config = parse(&["--placement-moves", "--down-timeout=3s"], no_env()).unwrap();
    let node = crate::server::node_config(&config, crate::server::Start::Found).unwrap();
    assert_eq!(node.down_timeout, Duration::from_secs(3));
    for bad in ["--down-timeout=soon", "--down-timeout=10ms"] {
        let error = parse(&[bad], no_env()).unwrap_err();
        assert!(matches!(error, ConfigError::BadDownTimeout { .. }), "{bad}: {error}");
    }
    let env = vec![("RINGKV_REPLICAS".to_owned(), "1".to_owned())];
    assert_eq!(parse(&[], env).unwrap().replicas, 1);
    for bad in ["--replicas=0", "--replicas=8", "--max-concurrent-moves=0"] {
        let error = parse(&[bad], no_env()).unwrap_err();
        assert!(matches!(error, ConfigError::OutOfRange { .. }), "{bad}: {error}");
    }
}

#[test]
fn the_backend_cache_bound_reaches_the_store() {
    let config = parse(&[], no_env()).unwrap();
    assert_eq!(config.backend_cache_bytes, DEFAULT_BACKEND_CACHE_BYTES);
    let node = crate::server::node_config(&config, crate::server::Start::Found).unwrap();
    assert_eq!(node.store.cache_bytes as u64, DEFAULT_BACKEND_CACHE_BYTES);

    let config = parse(&["--backend-cache-bytes=67108864"], no_env()).unwrap();
    let node = crate::server::node_config(&config, crate::server::Start::Found).unwrap();
    assert_eq!(node.store.cache_bytes, 64 << 20);

    let small = BACKEND_CACHE_BYTES_MIN - 1;
    let error = parse(&[&format!("--backend-cache-bytes={small}")], no_env()).unwrap_err();
    assert!(
        matches!(error, ConfigError::OutOfRange { flag: "backend-cache-bytes", value, .. } if value == small),
        "{error}"
    );
}

#[test]
fn quota_zero_means_default_and_a_huge_quota_is_warned_about() {
    let config = parse(&["--quota-backend-bytes=0"], no_env()).unwrap();
    assert_eq!(config.quota_backend_bytes, DEFAULT_QUOTA_BACKEND_BYTES);
    assert!(config.warnings.is_empty());
    let huge = QUOTA_BACKEND_BYTES_WARN + 1;
    let config = parse(&[&format!("--quota-backend-bytes={huge}")], no_env()).unwrap();
    assert_eq!(config.warnings, vec![ConfigWarning::LargeQuota { bytes: huge }]);
}

#[test]
fn names_and_tokens_must_be_usable() {
    for name in ["", "a=b", "a,b", "a b"] {
        let error = parse(&[&format!("--name={name}")], no_env()).unwrap_err();
        assert!(matches!(error, ConfigError::InvalidName { .. }), "{name:?}: {error}");
    }
    let error = parse(&["--initial-cluster-token="], no_env()).unwrap_err();
    assert!(matches!(error, ConfigError::Empty { flag: "initial-cluster-token" }), "{error}");
    // clap already refuses an empty path on the command line; a file can still say it.
    let toml = file("data-dir = \"\"\n");
    let error = parse(&["--config-file", toml.path().to_str().unwrap()], no_env()).unwrap_err();
    assert!(matches!(error, ConfigError::Empty { flag: "data-dir" }), "{error}");
}

#[test]
fn bad_command_lines_and_help_are_usage_errors() {
    let error = parse(&["--data-dri=/x"], no_env()).unwrap_err();
    assert!(
        matches!(&error, ConfigError::Usage(e) if e.kind() == clap::error::ErrorKind::UnknownArgument)
    );
    let error = parse(&["--shards=many"], no_env()).unwrap_err();
    assert!(
        matches!(&error, ConfigError::Usage(e) if e.kind() == clap::error::ErrorKind::ValueValidation)
    );
    let error = parse(&["--help"], no_env()).unwrap_err();
    assert!(
        matches!(&error, ConfigError::Usage(e) if e.kind() == clap::error::ErrorKind::DisplayHelp)
    );
}

#[test]
fn help_states_each_default_and_the_precedence() {
    let help = ServerArgs::command().render_long_help().to_string();
    assert!(help.contains("RINGKV_DATA_DIR"), "{help}");
    assert!(help.contains("flag > environment > file > default"), "{help}");
    let defaults = [
        ("name", DEFAULT_NAME.to_owned()),
        ("data-dir", DEFAULT_DATA_DIR.to_owned()),
        ("listen-client-urls", DEFAULT_CLIENT_URL.to_owned()),
        ("listen-peer-urls", DEFAULT_PEER_URL.to_owned()),
        ("initial-cluster-token", DEFAULT_INITIAL_CLUSTER_TOKEN.to_owned()),
        ("heartbeat-interval", DEFAULT_HEARTBEAT_INTERVAL_MS.to_string()),
        ("election-timeout", DEFAULT_ELECTION_TIMEOUT_MS.to_string()),
        ("snapshot-count", DEFAULT_SNAPSHOT_COUNT.to_string()),
        ("quota-backend-bytes", DEFAULT_QUOTA_BACKEND_BYTES.to_string()),
        ("backend-cache-bytes", DEFAULT_BACKEND_CACHE_BYTES.to_string()),
        ("max-request-bytes", DEFAULT_MAX_REQUEST_BYTES.to_string()),
        ("max-txn-ops", DEFAULT_MAX_TXN_OPS.to_string()),
        ("shards", DEFAULT_SHARDS.to_string()),
        ("replicas", DEFAULT_REPLICAS.to_string()),
        ("max-concurrent-moves", DEFAULT_MAX_CONCURRENT_MOVES.to_string()),
        ("placement-moves", DEFAULT_PLACEMENT_MOVES.to_string()),
        ("down-timeout", "5m".to_owned()),
        ("hash-key-segments", DEFAULT_HASH_KEY_SEGMENTS.to_string()),
        ("initial-cluster-state", "new".to_owned()),
        ("log-level", "info".to_owned()),
        ("log-format", "human".to_owned()),
        ("engine", "raft".to_owned()),
    ];
    let command = ServerArgs::command();
    for (flag, default) in defaults {
        let arg = command.get_arguments().find(|a| a.get_long() == Some(flag)).unwrap();
        let text = arg.get_help().unwrap().to_string().replace('\n', " ");
        assert!(text.contains(&format!("[default: {default}]")), "--{flag} help says {text:?}");
    }
}

#[test]
fn every_etcd_flag_we_promise_exists_with_its_variable() {
    let flags = value_flags();
    for flag in [
        "config-file",
        "name",
        "data-dir",
        "listen-client-urls",
        "advertise-client-urls",
        "listen-peer-urls",
        "initial-advertise-peer-urls",
        "initial-cluster",
        "initial-cluster-state",
        "initial-cluster-token",
        "heartbeat-interval",
        "election-timeout",
        "snapshot-count",
        "quota-backend-bytes",
        "max-request-bytes",
        "max-txn-ops",
        "log-level",
        "log-format",
        "engine",
        "shards",
    ] {
        assert!(flags.iter().any(|f| f == flag), "--{flag} missing");
    }
    assert_eq!(env_var_name("initial-advertise-peer-urls"), "RINGKV_INITIAL_ADVERTISE_PEER_URLS");
}

#[test]
fn the_log_format_is_set_like_every_other_setting() {
    let toml = file("log-format = \"json\"\n");
    let path = toml.path().to_str().unwrap();
    let config = parse(&["--config-file", path], no_env()).unwrap();
    assert_eq!(config.log_format, LogFormat::Json, "from the file");
    let config = parse(&[], env(&[("RINGKV_LOG_FORMAT", "json")])).unwrap();
    assert_eq!(config.log_format, LogFormat::Json, "from the environment");
    let config = parse(&["--log-format", "human"], env(&[("RINGKV_LOG_FORMAT", "json")])).unwrap();
    assert_eq!(config.log_format, LogFormat::Human, "the flag wins");
    let error = parse(&[], env(&[("RINGKV_LOG_FORMAT", "xml")])).unwrap_err();
    assert!(
        matches!(&error, ConfigError::Env { var, .. } if var == "RINGKV_LOG_FORMAT"),
        "{error}"
    );
}

#[test]
fn auto_compaction_comes_from_flags_environment_or_file_and_is_off_by_default() {
    use crate::compactor::{Policy, REVISION_CHECK_INTERVAL_DEFAULT};
    assert_eq!(parse(&[], no_env()).unwrap().auto_compaction, None);
    let config = parse(&["--auto-compaction-retention", "2"], no_env()).unwrap();
    assert_eq!(
        config.auto_compaction,
        Some(Policy::Periodic { retention: Duration::from_secs(2 * 3600) })
    );
    let config = parse(
        &[],
        env(&[
            ("RINGKV_AUTO_COMPACTION_MODE", "revision"),
            ("RINGKV_AUTO_COMPACTION_RETENTION", "10"),
        ]),
    )
    .unwrap();
    assert_eq!(
        config.auto_compaction,
        Some(Policy::Revision { retention: 10, check_interval: REVISION_CHECK_INTERVAL_DEFAULT })
    );
    let toml = file(
        "auto-compaction-mode = \"revision\"\nauto-compaction-retention = \"1000\"\n\
         auto-compaction-revision-interval = \"200ms\"\n",
    );
    let path = toml.path().to_str().unwrap();
    let config = parse(&["--config-file", path], no_env()).unwrap();
    assert_eq!(
        config.auto_compaction,
        Some(Policy::Revision { retention: 1000, check_interval: Duration::from_millis(200) })
    );
    let error = parse(
        &["--auto-compaction-mode", "revision", "--auto-compaction-retention", "1h"],
        no_env(),
    )
    .unwrap_err();
    assert!(matches!(error, ConfigError::AutoCompaction(_)), "{error}");
    let error = parse(&["--auto-compaction-mode", "hourly"], no_env()).unwrap_err();
    assert!(error.to_string().contains("hourly"), "{error}");
}

#[test]
fn the_test_only_remote_shard_flags_are_off_by_default_and_hidden() {
    let default = parse(&[], no_env()).unwrap();
    assert!(!default.debug_remote_shards && !default.debug_refuse_forwarded);
    assert!(parse(&["--debug-remote-shards"], no_env()).unwrap().debug_remote_shards);
    // The former name still works (scripts and the cli tests use it).
    assert!(parse(&["--debug-relay-watches"], no_env()).unwrap().debug_remote_shards);
    assert!(parse(&["--debug-refuse-forwarded"], no_env()).unwrap().debug_refuse_forwarded);
    assert!(default.debug_local_shards.is_empty());
    let local = parse(&["--debug-local-shards=1,3"], no_env()).unwrap().debug_local_shards;
    assert_eq!(local, [1, 3]);
    let command = ServerArgs::command();
    for flag in ["debug-remote-shards", "debug-refuse-forwarded", "debug-local-shards"] {
        let arg = command.get_arguments().find(|a| a.get_long() == Some(flag)).unwrap();
        assert!(arg.is_hide_set(), "--{flag} must stay out of --help");
    }
}

#[test]
fn a_zone_reaches_the_node_from_a_flag_the_environment_or_the_file() {
    let node_zone = |config: &ServerConfig| {
        crate::server::node_config(config, crate::server::Start::Found).unwrap().zone
    };
    let config = parse(&[], no_env()).unwrap();
    assert_eq!((config.zone.as_deref(), node_zone(&config)), (None, None));
    let config = parse(&["--zone=eu-west-1/rack-2"], no_env()).unwrap();
    assert_eq!(node_zone(&config).as_deref(), Some("eu-west-1/rack-2"));
    assert_eq!(parse(&[], env(&[("RINGKV_ZONE", "b")])).unwrap().zone.as_deref(), Some("b"));
    let flag_first = parse(&["--zone=a"], env(&[("RINGKV_ZONE", "b")])).unwrap();
    assert_eq!(flag_first.zone.as_deref(), Some("a"));
    let toml = file("zone = \"c\"\n");
    let flag = format!("--config-file={}", toml.path().display());
    assert_eq!(parse(&[&flag], no_env()).unwrap().zone.as_deref(), Some("c"));
    // Empty: no zone, as when not given.
    assert_eq!(parse(&["--zone="], no_env()).unwrap().zone, None);
    assert_eq!(parse(&[], env(&[("RINGKV_ZONE", "")])).unwrap().zone, None);
    let at_most = "z".repeat(ringkv_node::ZONE_BYTES_MAX);
    assert!(parse(&[&format!("--zone={at_most}")], no_env()).is_ok());
    let too_long = "z".repeat(ringkv_node::ZONE_BYTES_MAX + 1);
    for bad in [too_long.as_str(), "rack 1", "tab\there", "bell\u{7}"] {
        let error = parse(&[&format!("--zone={bad}")], no_env()).unwrap_err();
        assert!(matches!(error, ConfigError::InvalidZone { .. }), "{bad:?}: {error}");
    }
}

#[test]
fn move_bytes_per_second_reaches_the_node_and_0_means_no_limit() {
    let rate = |config: &ServerConfig| {
        crate::server::node_config(config, crate::server::Start::Found)
            .unwrap()
            .move_bytes_per_second
    };
    let config = parse(&[], no_env()).unwrap();
    assert_eq!(rate(&config), DEFAULT_MOVE_BYTES_PER_SECOND);
    assert_eq!(rate(&parse(&["--move-bytes-per-second=1000"], no_env()).unwrap()), 1_000);
    assert_eq!(rate(&parse(&["--move-bytes-per-second=0"], no_env()).unwrap()), 0);
    let from_env = parse(&[], env(&[("RINGKV_MOVE_BYTES_PER_SECOND", "2048")])).unwrap();
    assert_eq!(rate(&from_env), 2_048);
    let toml = file("move-bytes-per-second = 4096\n");
    let flag = format!("--config-file={}", toml.path().display());
    assert_eq!(rate(&parse(&[&flag], no_env()).unwrap()), 4_096);
    assert!(parse(&["--move-bytes-per-second=-1"], no_env()).is_err());
    assert!(parse(&["--move-bytes-per-second=fast"], no_env()).is_err());
}
