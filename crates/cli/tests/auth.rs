//! etcdctl 3.4's `auth`, `user` and `role` commands and `--user` against
//! three `ringkv server` processes, with every endpoint given, so a token
//! issued by one member is used on the others: each command's output is
//! etcdctl's own, checked line by line.
//! Needs `etcdctl` on `PATH` (`scripts/setup` installs it).
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::ProcessCluster;

/// Bounds each wait (a hang fails the test; this is not a speed check).
const WAIT: Duration = Duration::from_secs(60);

struct Ctl {
    endpoints: String,
}

impl Ctl {
    /// Runs etcdctl; stdout on success, stderr on failure.
    fn run(
        &self,
        user: Option<&str>,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, String> {
        let mut command = Command::new("etcdctl");
        command
            .arg(format!("--endpoints={}", self.endpoints))
            .arg("--command-timeout=20s")
            .args(user.map(|u| format!("--user={u}")))
            .args(args)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in
            ["ETCDCTL_ENDPOINTS", "ETCDCTL_USER", "ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY"]
        {
            command.env_remove(var);
        }
        let mut child = command.spawn().expect("etcdctl runs (scripts/setup installs it)");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn ok(&self, user: Option<&str>, args: &[&str]) -> String {
        self.run(user, args, None).unwrap_or_else(|e| panic!("etcdctl {args:?}: {e}"))
    }

    fn err(&self, user: Option<&str>, args: &[&str]) -> String {
        match self.run(user, args, None) {
            Ok(out) => panic!("etcdctl {args:?} succeeded: {out}"),
            Err(e) => e,
        }
    }
}

const ROOT: Option<&str> = Some("root:rootpw");
const ALICE: Option<&str> = Some("alice:alicepw");

#[test]
fn etcdctl_manages_users_roles_and_auth() {
    let cluster = ProcessCluster::start_with(3, &["--bcrypt-cost=4"]).unwrap();
    cluster.wait_leader(WAIT).unwrap();
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.client_url()).collect();
    let ctl = Ctl { endpoints: endpoints.join(",") };

    assert_eq!(ctl.ok(None, &["user", "add", "root:rootpw"]), "User root created\n");
    assert_eq!(ctl.ok(None, &["user", "add", "alice:alicepw"]), "User alice created\n");
    assert!(
        ctl.err(None, &["user", "add", "alice:x"]).contains("etcdserver: user name already exists")
    );
    assert_eq!(ctl.ok(None, &["role", "add", "app"]), "Role app created\n");
    let grant = |args: &[&str]| {
        let mut all = vec!["role", "grant-permission", "app"];
        all.extend_from_slice(args);
        assert_eq!(ctl.ok(None, &all), "Role app updated\n");
    };
    grant(&["readwrite", "/app/", "--prefix"]);
    grant(&["read", "cfg"]);
    grant(&["write", "zz/", "--from-key"]);
    assert_eq!(
        ctl.ok(None, &["user", "grant-role", "alice", "app"]),
        "Role app is granted to user alice\n"
    );
    // `auth enable` finds root without the root role, creates and grants it.
    assert_eq!(ctl.ok(None, &["auth", "enable"]), "Authentication Enabled\n");

    assert!(ctl.err(None, &["put", "k", "v"]).contains("etcdserver: user name is empty"));
    assert_eq!(ctl.ok(ALICE, &["put", "/app/a", "1"]), "OK\n");
    assert_eq!(ctl.ok(ALICE, &["get", "/app/a", "--print-value-only"]), "1\n");
    assert_eq!(ctl.ok(ALICE, &["get", "/app/", "--prefix", "--keys-only"]), "/app/a\n\n");
    assert!(ctl.err(ALICE, &["put", "/etc/a", "1"]).contains("etcdserver: permission denied"));
    assert!(
        ctl.err(ALICE, &["put", "cfg", "1"]).contains("etcdserver: permission denied"),
        "read only"
    );
    assert!(ctl.err(ALICE, &["get", "/", "--prefix"]).contains("etcdserver: permission denied"));
    assert_eq!(ctl.ok(ALICE, &["put", "zz/top", "x"]), "OK\n");
    assert!(
        ctl.err(Some("alice:wrong"), &["get", "/app/a"])
            .contains("etcdserver: authentication failed, invalid user ID or password")
    );
    assert!(ctl.err(ALICE, &["user", "list"]).contains("etcdserver: permission denied"));

    assert_eq!(ctl.ok(ROOT, &["user", "list"]), "alice\nroot\n");
    assert_eq!(ctl.ok(ROOT, &["role", "list"]), "app\nroot\n");
    assert_eq!(ctl.ok(ROOT, &["user", "get", "alice"]), "User: alice\nRoles: app\n");
    let role = ctl.ok(ROOT, &["role", "get", "app"]);
    assert_eq!(
        role,
        "Role app\nKV Read:\n\t[/app/, /app0) (prefix /app/)\n\tcfg\nKV Write:\n\t[/app/, /app0) (prefix /app/)\n\t[zz/, <open ended>\n",
        "{role}"
    );
    assert_eq!(ctl.ok(ROOT, &["put", "/etc/a", "1"]), "OK\n", "root may do everything");

    assert_eq!(
        ctl.ok(ROOT, &["role", "revoke-permission", "app", "/app/", "--prefix"]),
        "Permission of range [/app/, /app0) is revoked from role app\n"
    );
    assert!(ctl.err(ALICE, &["get", "/app/a"]).contains("etcdserver: permission denied"));
    assert_eq!(
        ctl.ok(ROOT, &["user", "revoke-role", "alice", "app"]),
        "Role app is revoked from user alice\n"
    );
    assert_eq!(
        ctl.ok(ALICE, &["user", "get", "alice"]),
        "User: alice\nRoles:\n",
        "a user reads itself"
    );
    let passwd =
        ctl.run(ROOT, &["user", "passwd", "alice", "--interactive=false"], Some("newpw\n"));
    assert_eq!(passwd.unwrap(), "Password updated\n");
    assert!(
        ctl.err(ALICE, &["get", "/app/a"])
            .contains("etcdserver: authentication failed, invalid user ID or password")
    );
    assert!(
        ctl.err(Some("alice:newpw"), &["get", "/app/a"]).contains("etcdserver: permission denied")
    );
    assert!(
        ctl.err(ROOT, &["user", "delete", "root"]).contains("etcdserver: invalid auth management")
    );
    assert_eq!(ctl.ok(ROOT, &["role", "delete", "app"]), "Role app deleted\n");
    assert_eq!(ctl.ok(ROOT, &["user", "delete", "alice"]), "User alice deleted\n");
    assert_eq!(ctl.ok(ROOT, &["user", "list"]), "root\n");
    assert_eq!(ctl.ok(ROOT, &["auth", "disable"]), "Authentication Disabled\n");
    assert_eq!(ctl.ok(None, &["put", "k", "v"]), "OK\n");
}
