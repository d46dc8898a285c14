//! `ringkv ctl node list|add|remove|decommission`: membership changes
//! through the etcd Cluster service, and a leadership hand-over through
//! `Maintenance.MoveLeader` before a leader leaves. With placement moves
//! on, `decommission` first drains the member: it starts the drain and
//! follows it through ringkv's admin routes on the members' HTTP side
//! (`ringkv_server::http::admin`), which etcd's API has no room for.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use ringkv_server::config::HttpUrl;
use ringkv_server::http::admin::DrainStatus;
use ringkv_server::http::admin_client::{AdminCallError, drain_status, set_drain};

use ringkv_api::etcdserverpb::cluster_client::ClusterClient;
use ringkv_api::etcdserverpb::maintenance_client::MaintenanceClient;
use ringkv_api::etcdserverpb::{Member, MemberAddRequest, MemberRemoveRequest, MoveLeaderRequest};
use serde_json::json;

use super::client::Clients;
use super::error::CtlError;
use super::output::{OutputFormat, Table, hex_id, print, print_json};
use super::status::{ClusterView, MemberView, label};

/// How long `decommission` waits for leadership to leave the member
/// (several election timeouts of a default cluster).
pub(crate) const LEADER_MOVE_WAIT: Duration = Duration::from_secs(30);

/// Pause between two looks at who leads.
const LEADER_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long `decommission` waits, by default, for a member's replicas to
/// move away (`--drain-timeout`): moving a replica copies its shard, so a
/// member holding much data takes minutes.
pub(crate) const DRAIN_TIMEOUT_DEFAULT: &str = "30m";

/// Pause between two looks at a drain's progress.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The member `given` names: its name, or its id in hex (as `status`
/// prints it).
fn find<'a>(members: &'a [Member], given: &str) -> Result<&'a Member, CtlError> {
    let by_id = u64::from_str_radix(given.trim_start_matches("0x"), 16).ok();
    members
        .iter()
        .find(|m| m.name == given)
        .or_else(|| members.iter().find(|m| Some(m.id) == by_id))
        .ok_or_else(|| CtlError::NoSuchMember {
            member: given.to_owned(),
            known: members
                .iter()
                .map(|m| format!("{} ({})", label(m), hex_id(m.id)))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn member_json(m: &Member) -> serde_json::Value {
    json!({
        "id": hex_id(m.id),
        "name": m.name,
        "peer_urls": m.peer_urls,
        "client_urls": m.client_urls,
        "is_learner": m.is_learner,
    })
}

/// `ringkv ctl node list`.
///
/// # Errors
/// No endpoint gave the member list.
pub(crate) async fn list(clients: &Clients, format: OutputFormat) -> Result<(), CtlError> {
    let (_, mut members) = clients.members().await?;
    members.sort_by_key(|m| (m.name.is_empty(), m.name.clone(), m.id));
    match format {
        OutputFormat::Table => {
            let mut table = Table::new(vec!["NAME", "ID", "PEER URLS", "CLIENT URLS", "LEARNER"]);
            for m in &members {
                table.row(vec![
                    if m.name.is_empty() { "(not started)".to_owned() } else { m.name.clone() },
                    hex_id(m.id),
                    m.peer_urls.join(","),
                    m.client_urls.join(","),
                    m.is_learner.to_string(),
                ]);
            }
            print(&table.render());
        }
        OutputFormat::Json => {
            print_json(&json!({ "members": members.iter().map(member_json).collect::<Vec<_>>() }));
        }
    }
    Ok(())
}

/// `ringkv ctl node add NAME --peer-urls URLS`: adds the member and prints
/// the settings to start it with.
///
/// # Errors
/// The cluster refused the change (one is already in progress, the URLs
/// are taken, …) or no endpoint answered.
pub(crate) async fn add(
    clients: &Clients,
    format: OutputFormat,
    name: &str,
    peer_urls: &[String],
    learner: bool,
) -> Result<(), CtlError> {
    let request = MemberAddRequest { peer_urls: peer_urls.to_vec(), is_learner: learner };
    let (endpoint, response) = clients
        .call_any("Cluster.MemberAdd", false, async |channel| {
            Ok(ClusterClient::new(channel).member_add(request.clone()).await?.into_inner())
        })
        .await?;
    let added = response.member.clone().unwrap_or_default();
    // The new member has no name until it starts: name it here.
    let initial_cluster: Vec<String> = response
        .members
        .iter()
        .flat_map(|m| {
            let name = if m.id == added.id { name.to_owned() } else { m.name.clone() };
            m.peer_urls.iter().map(move |url| format!("{name}={url}"))
        })
        .collect();
    let initial_cluster = initial_cluster.join(",");
    let peer_urls = peer_urls.join(",");
    match format {
        OutputFormat::Table => print(&format!(
            "Member {name} added to the cluster ({endpoint}) with id {id}{as_learner}.\n\
             Start it with these settings (flags, or the RINGKV_* variables below):\n\n\
             RINGKV_NAME={name}\n\
             RINGKV_INITIAL_CLUSTER={initial_cluster}\n\
             RINGKV_INITIAL_ADVERTISE_PEER_URLS={peer_urls}\n\
             RINGKV_INITIAL_CLUSTER_STATE=existing\n\n\
             ringkv server --name={name} --initial-cluster={initial_cluster} \
             --initial-advertise-peer-urls={peer_urls} --listen-peer-urls={peer_urls} \
             --initial-cluster-state=existing --listen-client-urls=<its client URL> \
             --data-dir=<an empty directory>\n",
            id = hex_id(added.id),
            as_learner = if learner { " as a learner" } else { "" },
        )),
        OutputFormat::Json => print_json(&json!({
            "member": member_json(&added),
            "members": response.members.iter().map(member_json).collect::<Vec<_>>(),
            "initial_cluster": initial_cluster,
            "initial_cluster_state": "existing",
        })),
    }
    Ok(())
}

async fn remove_member(clients: &Clients, id: u64) -> Result<String, CtlError> {
    let (endpoint, _) = clients
        .call_any("Cluster.MemberRemove", false, async |channel| {
            ClusterClient::new(channel).member_remove(MemberRemoveRequest { id }).await
        })
        .await?;
    Ok(endpoint)
}

/// `ringkv ctl node remove NAME|ID`.
///
/// # Errors
/// No such member, or the cluster refused the change.
pub(crate) async fn remove(
    clients: &Clients,
    format: OutputFormat,
    given: &str,
) -> Result<(), CtlError> {
    let (_, members) = clients.members().await?;
    let member = find(&members, given)?.clone();
    remove_member(clients, member.id).await?;
    match format {
        OutputFormat::Table => {
            print(&format!("Member {} ({}) removed.\n", label(&member), hex_id(member.id)));
        }
        OutputFormat::Json => print_json(&json!({ "removed": member_json(&member) })),
    }
    Ok(())
}

/// The voting member best placed to lead instead of `leaving`: reachable,
/// and furthest along in applying the log.
fn transferee(view: &ClusterView, leaving: u64) -> Option<&MemberView> {
    view.members
        .iter()
        .filter(|m| m.member.id != leaving && !m.member.is_learner)
        .filter_map(|m| m.status.as_ref().ok().map(|s| (m, s.raft_applied_index)))
        .max_by_key(|&(_, applied)| applied)
        .map(|(m, _)| m)
}

/// A drain's course: the member's replicas when it started and now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Drained {
    /// Data-shard replicas the member held when the drain was started.
    before: usize,
    /// Replicas it still holds (0 once drained).
    left: usize,
}

/// The client URLs of the members other than `leaving`, parsed.
fn other_urls(view: &ClusterView, leaving: u64) -> Vec<HttpUrl> {
    view.members
        .iter()
        .filter(|m| m.member.id != leaving)
        .filter_map(|m| m.endpoint.as_ref()?.parse().ok())
        .collect()
}

/// The drain status from the first of `urls` that gives it.
async fn any_drain_status(
    urls: &[HttpUrl],
    timeout: Duration,
) -> Result<(HttpUrl, DrainStatus), AdminCallError> {
    let mut last = None;
    for url in urls {
        match drain_status(url, timeout).await {
            Ok(status) => return Ok((url.clone(), status)),
            // The same answer from every member: no need to ask on.
            Err(e) if e.no_placement_moves() => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("called with at least one URL"))
}

/// The data shards `member` still holds by `status`.
fn shards_of(status: &DrainStatus, member: u64, name: &str) -> Result<Vec<u64>, CtlError> {
    let hex = hex_id(member);
    status
        .members
        .iter()
        .find(|m| m.id == hex)
        .map(|m| m.shards.clone())
        .ok_or_else(|| CtlError::DrainedMemberGone { member: name.to_owned() })
}

/// Whether every member holds every data shard any member holds (a
/// cluster of at most R voters): there is nowhere to drain a member to.
fn everyone_holds_everything(status: &DrainStatus) -> bool {
    let all: std::collections::BTreeSet<u64> =
        status.members.iter().flat_map(|m| m.shards.iter().copied()).collect();
    status.members.iter().all(|m| m.shards.len() == all.len())
}

/// Drains `member` when the cluster moves replicas: starts the drain and
/// waits, within `timeout`, until the member holds no data-shard replica
/// by the configurations the shards' leaders reported, showing a bar
/// (table output, on a terminal). `None` when the cluster does not move
/// replicas (every member holds every shard: nothing to drain).
async fn drain(
    clients: &Clients,
    view: &ClusterView,
    member: &Member,
    format: OutputFormat,
    timeout: Duration,
) -> Result<Option<Drained>, CtlError> {
    let name = label(member);
    let urls = other_urls(view, member.id);
    if urls.is_empty() {
        return Err(CtlError::NoOtherMember { member: name });
    }
    let ask = clients.command_timeout();
    let (url, status) = match any_drain_status(&urls, ask).await {
        Ok(found) => found,
        Err(e) if e.no_placement_moves() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let before = shards_of(&status, member.id, &name)?.len();
    if everyone_holds_everything(&status) {
        // At most R voters: each shard is on every member, and removing
        // one leaves the others as they are (as without placement moves).
        return Ok(None);
    }
    set_drain(&url, member.id, true, ask).await?;
    let bar = (format == OutputFormat::Table).then(|| {
        let bar = ProgressBar::new(before as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} replicas moved ({elapsed})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let deadline = Instant::now() + timeout;
    let left = loop {
        let (_, status) = any_drain_status(&urls, ask).await?;
        let left = shards_of(&status, member.id, &name)?;
        if let Some(bar) = &bar {
            bar.set_position(before.saturating_sub(left.len()) as u64);
            bar.set_message(format!("replicas left on {name}: {}", left.len()));
        }
        if left.is_empty() {
            break left.len();
        }
        if Instant::now() >= deadline {
            if let Some(bar) = &bar {
                bar.abandon();
            }
            return Err(CtlError::DrainTimedOut { member: name, waited: timeout, shards: left });
        }
        tokio::time::sleep(DRAIN_POLL_INTERVAL).await;
    };
    if let Some(bar) = bar {
        bar.finish();
        print(&format!("Drained {name}: {before} replicas moved to other members.\n"));
    }
    Ok(Some(Drained { before, left }))
}

/// `ringkv ctl node decommission NAME|ID`: takes a member out of service
/// without losing a replica's worth of redundancy or an election
/// timeout's availability: with placement moves on, its data-shard
/// replicas first move to the other members (within `drain_timeout`);
/// then, if it leads, leadership moves to the most up-to-date other
/// voter, and the member is removed.
///
/// # Errors
/// No such member, the drain refused (e.g. too few other members) or not
/// done within `drain_timeout` (it stays in place), no one to hand
/// leadership to, leadership did not move within [`LEADER_MOVE_WAIT`], or
/// the cluster refused a change.
pub(crate) async fn decommission(
    clients: &Clients,
    format: OutputFormat,
    given: &str,
    drain_timeout: Duration,
) -> Result<(), CtlError> {
    let view = ClusterView::gather(clients).await?;
    let members: Vec<Member> = view.members.iter().map(|m| m.member.clone()).collect();
    let member = find(&members, given)?.clone();
    let name = label(&member);
    let drained = drain(clients, &view, &member, format, drain_timeout).await?;
    // Leadership may have moved while the replicas did.
    let view = if drained.is_some() { ClusterView::gather(clients).await? } else { view };
    let leader = view.leader().ok_or(CtlError::NoLeader)?;
    let mut moved_to = None;
    if leader == member.id {
        let target = transferee(&view, member.id)
            .ok_or_else(|| CtlError::NoTransferee { member: name.clone() })?;
        // etcd accepts MoveLeader only at the leader itself.
        let endpoint = view
            .member(leader)
            .and_then(|m| m.endpoint.clone())
            .ok_or_else(|| CtlError::NoTransferee { member: name.clone() })?;
        let channel = clients.connect(&endpoint, false).await?;
        MaintenanceClient::new(channel)
            .move_leader(MoveLeaderRequest { target_id: target.member.id })
            .await
            .map_err(|status| CtlError::rpc(&endpoint, "Maintenance.MoveLeader", status))?;
        wait_leader_moved(clients, &member).await?;
        moved_to = Some(target.label());
        if format == OutputFormat::Table {
            print(&format!("Leadership moved from {name} to {}.\n", target.label()));
        }
    }
    // Ask the others: the leaving member may stop answering once removed.
    let others: Vec<String> = view
        .members
        .iter()
        .filter(|m| m.member.id != member.id)
        .filter_map(|m| m.endpoint.clone())
        .collect();
    let via = if others.is_empty() {
        clients.clone()
    } else {
        Clients::new(&others, clients.dial_timeout(), clients.command_timeout())?
    };
    remove_member(&via, member.id).await?;
    match format {
        OutputFormat::Table => {
            print(&format!("Member {name} ({}) removed.\n", hex_id(member.id)));
        }
        OutputFormat::Json => print_json(&json!({
            "removed": member_json(&member),
            "leadership_moved_to": moved_to,
            "drain": drained.map(|d| json!({
                "replicas_before": d.before,
                "replicas_left": d.left,
            })),
        })),
    }
    Ok(())
}

/// Waits until a member other than `leaving` leads, as `leaving`'s peers
/// see it.
async fn wait_leader_moved(clients: &Clients, leaving: &Member) -> Result<(), CtlError> {
    let deadline = Instant::now() + LEADER_MOVE_WAIT;
    loop {
        let view = ClusterView::gather(clients).await?;
        if view.leader().is_some_and(|l| l != leaving.id) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CtlError::LeaderDidNotMove {
                member: label(leaving),
                waited: LEADER_MOVE_WAIT,
            });
        }
        tokio::time::sleep(LEADER_POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str) -> Member {
        Member { id, name: name.to_owned(), ..Member::default() }
    }

    #[test]
    fn a_drain_reads_the_members_shards_and_times_out_naming_them() {
        use ringkv_server::http::admin::MemberDrain;
        let status = DrainStatus {
            members: vec![MemberDrain {
                id: hex_id(0x1f),
                name: "n2".to_owned(),
                draining: true,
                shards: vec![3, 9],
            }],
        };
        assert_eq!(shards_of(&status, 0x1f, "n2").unwrap(), vec![3, 9]);
        let gone = shards_of(&status, 0xabc, "n1").unwrap_err().to_string();
        assert!(gone.contains("n1 is no longer a member"), "{gone}");
        let late = CtlError::DrainTimedOut {
            member: "n2".to_owned(),
            waited: Duration::from_secs(60),
            shards: vec![3, 9],
        }
        .to_string();
        assert!(late.contains("replicas of 2 data shards after 60s"), "{late}");
        assert!(late.contains("shards 3, 9;") && late.contains("run the same command"), "{late}");
    }

    /// At most R voters, every member holds every shard: decommission
    /// removes without a drain (one would be refused: too few members).
    #[test]
    fn a_cluster_where_every_member_holds_every_shard_has_nothing_to_drain() {
        use ringkv_server::http::admin::MemberDrain;
        let m = |id: u64, shards: &[u64]| MemberDrain {
            id: hex_id(id),
            name: format!("n{id}"),
            draining: false,
            shards: shards.to_vec(),
        };
        let three = DrainStatus { members: vec![m(1, &[1, 2]), m(2, &[1, 2]), m(3, &[1, 2])] };
        assert!(everyone_holds_everything(&three));
        let placed = DrainStatus { members: vec![m(1, &[1, 2]), m(2, &[1]), m(3, &[2])] };
        assert!(!everyone_holds_everything(&placed));
    }

    #[test]
    fn members_are_found_by_name_or_hex_id() {
        let members = [member(0xabc, "n1"), member(0x1f, "n2")];
        assert_eq!(find(&members, "n2").unwrap().id, 0x1f);
        assert_eq!(find(&members, "0000000000000abc").unwrap().name, "n1");
        let error = find(&members, "n9").unwrap_err().to_string();
        assert!(error.contains("n1 (0000000000000abc)"), "{error}");
    }
}
