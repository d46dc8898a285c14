//! `ringkv ctl status` and `ringkv ctl shards`: the member list, and each
//! member's own `Maintenance.Status` and dashboard view
//! (`/dashboard/api/node`: every shard it hosts as it sees it), asked of
//! every member directly (not only of the endpoints given), so that one
//! command shows the cluster. A member that does not answer is shown as
//! unreachable; its shards are shown as the others see them.

use std::collections::BTreeMap;

use futures_util::future::join_all;
use ringkv_api::etcdserverpb::{Member, StatusResponse};
use ringkv_server::config::HttpUrl;
use ringkv_server::dashboard::fetch::fetch_node_view;
use ringkv_server::dashboard::{NodeView, ShardView};
use serde_json::{Value, json};

use super::client::Clients;
use super::error::CtlError;
use super::output::{OutputFormat, Table, hex_id, human_bytes, print, print_json};

/// The metadata shard every member hosts beside the data shards (the
/// node's `META_SHARD`).
const META_SHARD: u64 = ringkv_node::META_SHARD.0;

/// The role a member's view gives a shard it leads (`ShardView::role`).
const LEADER_ROLE: &str = "leader";

/// One member and what it said about itself.
#[derive(Debug)]
pub(crate) struct MemberView {
    /// The member as the member list has it.
    pub(crate) member: Member,
    /// The client URL asked, if it has one.
    pub(crate) endpoint: Option<String>,
    /// Its status, or why there is none.
    pub(crate) status: Result<StatusResponse, String>,
    /// Its own view of the shards it hosts, or why there is none.
    pub(crate) node: Result<NodeView, String>,
}

impl MemberView {
    /// The member's name, or its id while it has not started (a member
    /// added but not yet running has no name).
    pub(crate) fn label(&self) -> String {
        label(&self.member)
    }

    /// Shards it hosts and shards it leads, by its own view.
    fn shards_held_led(&self) -> Option<(usize, usize)> {
        let node = self.node.as_ref().ok()?;
        let led = node.shards.iter().filter(|s| s.role == LEADER_ROLE).count();
        Some((node.shards.len(), led))
    }

    /// Its zone (`--zone`) as its own view reports it: `None` without one,
    /// and while its view is missing (see [`ClusterView::zone_of`]).
    fn own_zone(&self) -> Option<&str> {
        self.node.as_ref().ok()?.zone.as_deref()
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
            let (status, node) = match &endpoint {
                Some(url) => {
                    let (status, node) =
                        tokio::join!(clients.status_of(url), node_view(clients, url));
                    (status.map_err(|e| e.to_string()), node)
                }
                None => (Err("not started".to_owned()), Err("not started".to_owned())),
            };
            MemberView { member, endpoint, status, node }
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

    /// Member `id`'s zone: from its own view, else from the member table
    /// of any member that answered (where every member's published zone
    /// is recorded); `None` when it has none or nobody could say.
    fn zone_of(&self, id: u64) -> Option<String> {
        let own = self.member(id).and_then(MemberView::own_zone);
        if let Some(zone) = own {
            return Some(zone.to_owned());
        }
        let hex = hex_id(id);
        self.members
            .iter()
            .filter_map(|m| m.node.as_ref().ok())
            .flat_map(|view| &view.members)
            .find(|m| m.id == hex && m.zone.is_some())
            .and_then(|m| m.zone.clone())
    }

    /// The member with this id.
    pub(crate) fn member(&self, id: u64) -> Option<&MemberView> {
        self.members.iter().find(|m| m.member.id == id)
    }

    /// The member whose id is `hex` (as the dashboard views write ids).
    fn member_by_hex(&self, hex: &str) -> Option<&MemberView> {
        self.members.iter().find(|m| hex_id(m.member.id) == hex)
    }

    /// A member's label from its hex id; the id itself for one the member
    /// list does not have.
    fn label_of(&self, hex: &str) -> String {
        self.member_by_hex(hex).map_or_else(|| hex.to_owned(), MemberView::label)
    }

    /// Every shard any reachable member hosts, each as the best-placed
    /// reachable member sees it.
    fn shards(&self) -> Vec<ShardRow<'_>> {
        let mut seen: BTreeMap<u64, Vec<(&MemberView, &ShardView)>> = BTreeMap::new();
        for m in &self.members {
            if let Ok(node) = &m.node {
                for shard in &node.shards {
                    seen.entry(shard.shard).or_default().push((m, shard));
                }
            }
        }
        seen.into_iter()
            .filter_map(|(id, views)| {
                // The leader's own view when it answered (the highest term
                // if two claim it); else the most advanced follower's.
                let best = views
                    .iter()
                    .max_by_key(|(_, s)| (s.role == LEADER_ROLE, s.term, s.applied_index))?;
                let (from, view) = *best;
                let leader = view.leader.as_deref();
                let leader_reachable =
                    leader.and_then(|hex| self.member_by_hex(hex)).is_some_and(|m| m.node.is_ok());
                Some(ShardRow { id, view, from, leader_reachable })
            })
            .collect()
    }
}

/// One shard as `ctl shards` shows it.
struct ShardRow<'a> {
    /// The shard.
    id: u64,
    /// The view shown: its leader's, or the most advanced one that
    /// answered when the leader did not.
    view: &'a ShardView,
    /// The member whose view it is.
    from: &'a MemberView,
    /// Whether the leader the view names answered.
    leader_reachable: bool,
}

impl ShardRow<'_> {
    /// The shard's label: the metadata shard is marked as such.
    fn label(&self) -> String {
        if self.id == META_SHARD { format!("{META_SHARD} (meta)") } else { self.id.to_string() }
    }

    /// Whether the view shown is the leader's own.
    fn is_leaders_view(&self) -> bool {
        self.view.role == LEADER_ROLE
    }
}

/// The dashboard view of the member serving client URL `url`, bounded by
/// the command timeout.
async fn node_view(clients: &Clients, url: &str) -> Result<NodeView, String> {
    let parsed: HttpUrl = url.parse().map_err(|e| format!("{url}: {e}"))?;
    fetch_node_view(&parsed, clients.command_timeout()).await.map_err(|e| e.to_string())
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
                    or_dash(view.zone_of(m.member.id)),
                    m.shards_held_led()
                        .map_or_else(|| "-".to_owned(), |(held, led)| format!("{held}/{led}")),
                    or_dash(s.map(|s| s.version.clone())),
                ]);
            }
            print(&table.render());
            for m in &view.members {
                if let (Err(e), Some(_)) = (&m.status, &m.endpoint) {
                    print(&format!("{}: {e}\n", m.label()));
                } else if let (Err(e), Some(_)) = (&m.node, &m.endpoint) {
                    print(&format!("{}: no shard view: {e}\n", m.label()));
                }
            }
        }
        OutputFormat::Json => {
            let members: Vec<Value> = view
                .members
                .iter()
                .map(|m| {
                    let held_led = m.shards_held_led();
                    let mut out = json!({
                        "id": hex_id(m.member.id),
                        "name": m.member.name,
                        "peer_urls": m.member.peer_urls,
                        "client_urls": m.member.client_urls,
                        "is_learner": m.member.is_learner,
                        "health": m.health(),
                        "role": role(m, leader),
                        "zone": view.zone_of(m.member.id),
                        "shards_held": held_led.map(|(held, _)| held),
                        "shards_led": held_led.map(|(_, led)| led),
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
                    if let Err(e) = &m.node {
                        out["view_error"] = e.clone().into();
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

/// Whether a shard's replicas differ from the target the metadata shard
/// records for it (a move under way, or not started yet).
fn is_moving(row: &ShardRow<'_>) -> bool {
    if row.view.target.is_empty() {
        return false;
    }
    let mut have: Vec<&String> = row.view.voters.iter().chain(&row.view.learners).collect();
    have.sort();
    have.dedup();
    let mut want: Vec<&String> = row.view.target.iter().collect();
    want.sort();
    have != want
}

/// The TARGET cell: `-` while every member holds the shard (no target),
/// else the target's members, marked `(pending)` while the replicas differ (moves are not built yet:
/// a target beyond `--replicas` members stays pending).
fn target_cell(row: &ShardRow<'_>, labels: &dyn Fn(&[String]) -> Vec<String>) -> String {
    if row.view.target.is_empty() {
        return "-".to_owned();
    }
    let target = labels(&row.view.target).join(",");
    if is_moving(row) { format!("{target} (pending)") } else { target }
}

/// `ringkv ctl shards`.
///
/// One row per shard any reachable member hosts: the metadata shard 0,
/// then the data shards. (`-w json` also gives each replica's zone,
/// `replica_zones`, in the order of `replicas`.) TARGET is the replica set the metadata shard
/// records for a data shard once the cluster has more members than
/// `--replicas` (`-` while every member holds it), marked `(pending)`
/// while the shard's replicas differ from it. Each row is its leader's own view (replicas,
/// learners, term, applied index) when the leader answered, else the most
/// advanced view another member gave, with the leader marked unreachable.
/// The size is the leader's whole store, shown only on a cluster of one
/// data shard: the shards of a member share one store.
///
/// # Errors
/// No endpoint gave the member list.
pub(crate) async fn shards(clients: &Clients, format: OutputFormat) -> Result<(), CtlError> {
    let view = ClusterView::gather(clients).await?;
    let rows = view.shards();
    let data_shards = rows.iter().filter(|r| r.id != META_SHARD).count();
    // In the member list's order (by name), as the member list shows them.
    let in_list_order = |ids: &[String]| {
        let mut ids: Vec<String> = ids.to_vec();
        ids.sort_by_key(|hex| {
            let at = view.members.iter().position(|m| hex_id(m.member.id) == *hex);
            (at.is_none(), at, hex.clone())
        });
        ids
    };
    let labels = |ids: &[String]| {
        in_list_order(ids).iter().map(|hex| view.label_of(hex)).collect::<Vec<_>>()
    };
    // Each replica's zone, in the order `labels` gives the replicas.
    let zones = |ids: &[String]| {
        let zone = |hex: &String| view.member_by_hex(hex).and_then(|m| view.zone_of(m.member.id));
        in_list_order(ids).iter().map(zone).collect::<Vec<_>>()
    };
    // The store's size, where it is one data shard's.
    let size_of = |row: &ShardRow<'_>| {
        let leader_status = row.from.status.as_ref().ok();
        (data_shards == 1 && row.id != META_SHARD && row.is_leaders_view())
            .then(|| leader_status.map(|s| s.db_size))
            .flatten()
    };
    let leader_label =
        |row: &ShardRow<'_>| row.view.leader.as_deref().map(|hex| view.label_of(hex));
    match format {
        OutputFormat::Table => {
            let mut table = Table::new(vec![
                "SHARD", "REPLICAS", "LEARNERS", "TARGET", "LEADER", "TERM", "APPLIED", "SIZE",
            ]);
            for row in &rows {
                let learners = labels(&row.view.learners);
                let leader = match leader_label(row) {
                    Some(name) if row.leader_reachable => name,
                    Some(name) => format!("{name} (unreachable)"),
                    None => "-".to_owned(),
                };
                table.row(vec![
                    row.label(),
                    labels(&row.view.voters).join(","),
                    if learners.is_empty() { "-".to_owned() } else { learners.join(",") },
                    target_cell(row, &labels),
                    leader,
                    row.view.term.to_string(),
                    row.view.applied_index.to_string(),
                    or_dash(size_of(row).map(|b| human_bytes(b.max(0).unsigned_abs()))),
                ]);
            }
            print(&table.render());
            for m in &view.members {
                if let (Err(e), Some(_)) = (&m.node, &m.endpoint) {
                    print(&format!("{}: unreachable: {e}\n", m.label()));
                }
            }
        }
        OutputFormat::Json => {
            let shards: Vec<Value> = rows
                .iter()
                .map(|row| {
                    json!({
                        "id": row.id,
                        "metadata": row.id == META_SHARD,
                        "replicas": labels(&row.view.voters),
                        "replica_zones": zones(&row.view.voters),
                        "learners": labels(&row.view.learners),
                        "target": labels(&row.view.target),
                        "moving": is_moving(row),
                        "leader": leader_label(row),
                        "leader_reachable": row.leader_reachable,
                        "term": row.view.term,
                        "applied_index": row.view.applied_index,
                        "commit_index": row.view.commit_index,
                        "revision": row.view.revision,
                        "size_bytes": size_of(row),
                        "view_of": row.from.label(),
                    })
                })
                .collect();
            let unreachable: Vec<String> = view
                .members
                .iter()
                .filter(|m| m.endpoint.is_some() && m.node.is_err())
                .map(MemberView::label)
                .collect();
            print_json(&json!({ "shards": shards, "unreachable": unreachable }));
        }
    }
    Ok(())
}
