//! The deployment files, checked without a container engine or a
//! Kubernetes cluster: `deploy/compose.yaml` and `deploy/k8s/statefulset.yaml`
//! parse, hang together (names, volumes, ports, probes), and every node's
//! command line is accepted by the server's own configuration parser, as is
//! the image's default command in `deploy/Containerfile`.
//! (`scripts/container-test` runs them for real where an engine exists.)
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use ringkv_server::config::{ServerConfig, parse_from};
use serde_norway::Value;

fn repo_file(path: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The server's verdict on a `ringkv` command line (without the program
/// name; the first word must be `server`).
fn server_config(args: &[String]) -> ServerConfig {
    assert_eq!(args.first().map(String::as_str), Some("server"), "{args:?}");
    let no_env: Vec<(String, String)> = Vec::new();
    parse_from(std::iter::once("ringkv").chain(args[1..].iter().map(String::as_str)), no_env)
        .unwrap_or_else(|e| panic!("the server refuses {args:?}: {e}"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("not a list: {value:?}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_compose_file_describes_three_nodes_that_agree() {
    let compose: Value = serde_norway::from_str(&repo_file("deploy/compose.yaml")).unwrap();
    let services = compose["services"].as_mapping().unwrap();
    let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(names, ["ringkv-1", "ringkv-2", "ringkv-3"]);
    let declared_volumes: BTreeSet<&str> =
        compose["volumes"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap()).collect();

    let mut host_ports = BTreeSet::new();
    let mut clusters = BTreeSet::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        assert_eq!(service["image"], "ringkv:local", "{name}");
        assert_eq!(service["hostname"], name, "{name}: peers dial it by this name");
        let config = server_config(&strings(&service["command"]));
        assert_eq!(config.name, name);
        assert_eq!(config.data_dir, PathBuf::from("/data"));
        assert_eq!(config.initial_cluster.len(), 3, "{name}");
        let own = config.initial_cluster.urls(name).unwrap();
        assert_eq!(own[0].to_string(), format!("http://{name}:2380"), "{name}");
        assert_eq!(config.advertise_client_urls[0].to_string(), format!("http://{name}:2379"));
        assert_eq!(config.listen_client_addrs[0].port(), 2379);
        clusters.insert((config.initial_cluster.to_string(), config.initial_cluster_token));

        // Its data lives in its own declared named volume.
        let volumes = strings(&service["volumes"]);
        assert_eq!(volumes, [format!("{name}:/data")], "{name}");
        assert!(declared_volumes.contains(name), "volume {name} is declared");

        // Its client port reaches the host on a port of its own, loopback only.
        let ports = strings(&service["ports"]);
        assert_eq!(ports.len(), 1, "{name}");
        let (host, container) = ports[0].rsplit_once(':').unwrap();
        assert_eq!(container, "2379");
        assert!(host.starts_with("127.0.0.1:"), "{name}: {host}");
        assert!(host_ports.insert(host.to_owned()), "{name}: {host} is taken");

        let check = strings(&service["healthcheck"]["test"]);
        assert_eq!(&check[..3], ["CMD", "/ringkv", "ctl"], "{name}: the image has no shell");
    }
    assert_eq!(clusters.len(), 1, "every node names the same cluster: {clusters:?}");
}

/// `CMD [...]` of a Containerfile, its continuation lines joined.
fn containerfile_cmd(text: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    let line = joined.lines().find(|l| l.starts_with("CMD ")).unwrap();
    serde_json::from_str(line.trim_start_matches("CMD ")).unwrap()
}

#[test]
fn the_image_is_the_binary_alone_and_its_default_command_is_valid() {
    let text = repo_file("deploy/Containerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms, ["FROM scratch"], "no base image to pull");
    assert!(text.lines().any(|l| l == "ENTRYPOINT [\"/ringkv\"]"), "{text}");
    let config = server_config(&containerfile_cmd(&text));
    assert_eq!(config.data_dir, PathBuf::from("/data"));
    assert!(text.contains("VOLUME [\"/data\"]"));
}

#[test]
fn the_statefulset_gives_stable_names_volumes_and_readiness() {
    let text = repo_file("deploy/k8s/statefulset.yaml");
    let documents: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .collect();
    let kinds: Vec<&str> = documents.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Service", "Service", "StatefulSet"]);
    let set = &documents[2];
    let headless = documents
        .iter()
        .find(|d| d["kind"] == "Service" && d["spec"]["clusterIP"] == "None")
        .expect("a headless service");
    let service = headless["metadata"]["name"].as_str().unwrap();
    assert_eq!(set["spec"]["serviceName"], service, "pods get names under the headless service");
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"], true,
        "peers must resolve before any member is ready"
    );
    assert_eq!(set["spec"]["podManagementPolicy"], "Parallel");
    let selector = &set["spec"]["selector"]["matchLabels"];
    assert_eq!(&set["spec"]["template"]["metadata"]["labels"], selector);
    assert_eq!(&headless["spec"]["selector"], selector);

    let set_name = set["metadata"]["name"].as_str().unwrap();
    let replicas = set["spec"]["replicas"].as_u64().unwrap();
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&container["args"]);
    let claim = set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].as_str().unwrap();
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == claim)
        .expect("the claimed volume is mounted");
    let probe = &container["readinessProbe"]["httpGet"];
    assert_eq!(probe["path"], "/health");
    let client_port = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == probe["port"])
        .expect("the probe's port is declared")["containerPort"]
        .as_u64()
        .unwrap();

    // Every pod, with Kubernetes' $(POD_NAME) expansion, is a valid member
    // of the same cluster of stable names.
    let pods: Vec<String> = (0..replicas).map(|i| format!("{set_name}-{i}")).collect();
    for pod in &pods {
        let expanded: Vec<String> = args.iter().map(|a| a.replace("$(POD_NAME)", pod)).collect();
        let config = server_config(&expanded);
        assert_eq!(&config.name, pod);
        assert_eq!(config.data_dir, PathBuf::from(mount["mountPath"].as_str().unwrap()));
        assert_eq!(config.listen_client_addrs[0].port() as u64, client_port);
        let members: Vec<&str> = config.initial_cluster.iter().map(|(name, _)| name).collect();
        assert_eq!(members, pods.iter().map(String::as_str).collect::<Vec<_>>());
        for (name, urls) in config.initial_cluster.iter() {
            assert_eq!(urls[0].to_string(), format!("http://{name}.{service}:2380"));
        }
        assert_eq!(
            config.advertise_client_urls[0].to_string(),
            format!("http://{pod}.{service}:{client_port}")
        );
    }
}
