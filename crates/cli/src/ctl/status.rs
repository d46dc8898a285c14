//! `ringkv ctl status` and `ringkv ctl shards`: the member list and each
//! member's own `Maintenance.Status`, asked of every member directly (not
//! only of the endpoints given), so that one command shows the cluster.

use futures_util::future::join_all;
use ringkv_api::etcdserverpb::{Member, StatusResponse};
use serde_json::{Value, json};

use super::client::Clients;
use super::error::CtlError;
use super::output::{OutputFormat, Table, hex_id, human_bytes, print, print_json};

/// The one data shard a cluster has until sharding exists (the node's
/// `DATA_SHARD`).
const DATA_SHARD: u64 = ringkv_node::DATA_SHARD.0;

/// Shards each member holds: every member replicates the one data shard.
const SHARDS_PER_MEMBER: u64 = 1;

/// One member and what it said about itself.
#[derive(Debug)]
pub(crate) struct MemberView {
    /// The member as the member list has it.
    pub(crate) member: Member,
    /// The client URL asked, if it has one.
    pub(crate) endpoint: Option<String>,
    /// Its status, or why there is none.
    pub(crate) status: Result<StatusResponse, String>,
}

impl MemberView {
    /// The member's name, or its id while it has not started (a member
    /// added but not yet running has no name).
    pub(crate) fn label(&self) -> String {
        label(&self.member)
    }

    /// How the member is doing, in a word or three.
    fn health(&self) -> String {
        match &self.status {
            Err(e) if self.endpoint.is_none() => e.clone(),
            Err(_) => "unreachable".to_owned(),
            Ok(s) if !s.errors.is_empty() => format!("errors: {}", s.errors.join("; ")),
            Ok(s) if s.leader == 0 => "no leader".to_owned(),
            Ok(_) => "healthy".to_owned(),
        }
    }
}

/// A member's name, or its id before it has one.
pub(crate) fn label(member: &Member) -> String {
    if member.name.is_empty() { hex_id(member.id) } else { member.name.clone() }
}

/// The whole cluster as the members describe it.
#[derive(Debug)]
pub(crate) struct ClusterView {
    /// The members, in name order (unstarted ones, by id, last).
    pub(crate) members: Vec<MemberView>,
}

impl ClusterView {
    /// Asks for the member list, then every member for its status, all at
    /// once.
    ///
    /// # Errors
    /// No endpoint gave the member list. (A member that does not answer
    /// its status is shown as such, not an error.)
    pub(crate) async fn gather(clients: &Clients) -> Result<ClusterView, CtlError> {
        let (_, mut members) = clients.members().await?;
        members.sort_by_key(|m| (m.name.is_empty(), m.name.clone(), m.id));
        let asks = members.into_iter().map(|member| async move {
            let endpoint = member.client_urls.first().cloned();
            let status = match &endpoint {
                Some(url) => clients.status_of(url).await.map_err(|e| e.to_string()),
                None => Err("not started".to_owned()),
            };
            MemberView { member, endpoint, status }
        });
        Ok(ClusterView { members: join_all(asks).await })
    }

    /// The leader most members agree on, if any member names one.
    pub(crate) fn leader(&self) -> Option<u64> {
        let mut votes: Vec<(u64, usize)> = Vec::new();
        for view in &self.members {
            if let Ok(s) = &view.status
                && s.leader != 0
            {
                match votes.iter_mut().find(|(id, _)| *id == s.leader) {
                    Some((_, n)) => *n += 1,
                    None => votes.push((s.leader, 1)),
                }
            }
        }
        votes.into_iter().max_by_key(|&(_, n)| n).map(|(id, _)| id)
    }

    /// The member with this id.
    pub(crate) fn member(&self, id: u64) -> Option<&MemberView> {
        self.members.iter().find(|m| m.member.id == id)
    }
}

fn role(view: &MemberView, leader: Option<u64>) -> &'static str {
    if view.member.is_learner {
        "learner"
    } else if Some(view.member.id) == leader {
        "leader"
    } else if view.status.is_ok() {
        "follower"
    } else {
        "-"
    }
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `ringkv ctl status`.
///
/// # Errors
/// No endpoint gave the member list.
pub(crate) async fn status(clients: &Clients, format: OutputFormat) -> Result<(), CtlError> {
    let view = ClusterView::gather(clients).await?;
    let leader = view.leader();
    match format {
        OutputFormat::Table => {
            let mut table = Table::new(vec![
                "NAME",
                "ID",
                "CLIENT URL",
                "HEALTH",
                "ROLE",
                "TERM",
                "APPLIED",
                "DB SIZE",
                "IN USE",
                "ZONE",
                "SHARDS HELD/LED",
                "VERSION",
            ]);
            for m in &view.members {
                let s = m.status.as_ref().ok();
                let led = u64::from(Some(m.member.id) == leader);
                table.row(vec![
                    m.label(),
                    hex_id(m.member.id),
                    or_dash(m.endpoint.as_ref()),
                    m.health(),
                    role(m, leader).to_owned(),
                    or_dash(s.map(|s| s.raft_term)),
                    or_dash(s.map(|s| s.raft_applied_index)),
                    or_dash(s.map(|s| human_bytes(s.db_size.max(0).unsigned_abs()))),
                    or_dash(s.map(|s| human_bytes(s.db_size_in_use.max(0).unsigned_abs()))),
                    // Members carry no zone label yet.
                    "-".to_owned(),
                    format!("{SHARDS_PER_MEMBER}/{led}"),
                    or_dash(s.map(|s| s.version.clone())),
                ]);
            }
            print(&table.render());
            for m in &view.members {
                if let (Err(e), Some(_)) = (&m.status, &m.endpoint) {
                    print(&format!("{}: {e}\n", m.label()));
                }
            }
        }
        OutputFormat::Json => {
            let members: Vec<Value> = view
                .members
                .iter()
                .map(|m| {
                    let led = Some(m.member.id) == leader;
                    let mut out = json!({
                        "id": hex_id(m.member.id),
                        "name": m.member.name,
                        "peer_urls": m.member.peer_urls,
                        "client_urls": m.member.client_urls,
                        "is_learner": m.member.is_learner,
                        "health": m.health(),
                        "role": role(m, leader),
                        "zone": Value::Null,
                        "shards_held": SHARDS_PER_MEMBER,
                        "shards_led": u64::from(led),
                    });
                    match &m.status {
                        Ok(s) => {
                            out["leader"] = hex_id(s.leader).into();
                            out["raft_term"] = s.raft_term.into();
                            out["raft_index"] = s.raft_index.into();
                            out["raft_applied_index"] = s.raft_applied_index.into();
                            out["db_size_bytes"] = s.db_size.into();
                            out["db_size_in_use_bytes"] = s.db_size_in_use.into();
                            out["version"] = s.version.clone().into();
                            out["errors"] = s.errors.clone().into();
                        }
                        Err(e) => out["error"] = e.clone().into(),
                    }
                    out
                })
                .collect();
            print_json(&json!({
                "leader": leader.map(hex_id),
                "members": members,
            }));
        }
    }
    Ok(())
}

/// `ringkv ctl shards`.
///
/// Today a cluster has exactly one data shard, replicated by every
/// member; its term, applied index and size are its leader's.
///
/// # Errors
/// No endpoint gave the member list.
pub(crate) async fn shards(clients: &Clients, format: OutputFormat) -> Result<(), CtlError> {
    let view = ClusterView::gather(clients).await?;
    let leader = view.leader();
    let voters: Vec<String> =
        view.members.iter().filter(|m| !m.member.is_learner).map(MemberView::label).collect();
    let learners: Vec<String> =
        view.members.iter().filter(|m| m.member.is_learner).map(MemberView::label).collect();
    let leader_view = leader.and_then(|id| view.member(id));
    let leader_status = leader_view.and_then(|m| m.status.as_ref().ok());
    match format {
        OutputFormat::Table => {
            let mut table = Table::new(vec![
                "SHARD", "REPLICAS", "LEARNERS", "LEADER", "TERM", "APPLIED", "SIZE",
            ]);
            table.row(vec![
                DATA_SHARD.to_string(),
                voters.join(","),
                if learners.is_empty() { "-".to_owned() } else { learners.join(",") },
                or_dash(leader_view.map(MemberView::label)),
                or_dash(leader_status.map(|s| s.raft_term)),
                or_dash(leader_status.map(|s| s.raft_applied_index)),
                or_dash(leader_status.map(|s| human_bytes(s.db_size.max(0).unsigned_abs()))),
            ]);
            print(&table.render());
        }
        OutputFormat::Json => {
            print_json(&json!({
                "shards": [{
                    "id": DATA_SHARD,
                    "replicas": voters,
                    "learners": learners,
                    "leader": leader_view.map(MemberView::label),
                    "term": leader_status.map(|s| s.raft_term),
                    "applied_index": leader_status.map(|s| s.raft_applied_index),
                    "size_bytes": leader_status.map(|s| s.db_size),
                }],
            }));
        }
    }
    Ok(())
}
