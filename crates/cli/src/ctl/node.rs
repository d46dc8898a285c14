//! `ringkv ctl node list|add|remove|decommission`: membership changes
//! through the etcd Cluster service, and a leadership hand-over through
//! `Maintenance.MoveLeader` before a leader leaves.

use std::time::{Duration, Instant};

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

/// `ringkv ctl node decommission NAME|ID`: takes a member out of service
/// without an election timeout's unavailability: if it leads, leadership
/// moves first to the most up-to-date other voter, then the member is
/// removed. (With sharding, this is also where its replicas will move
/// away; today every member holds the one shard, so removal is the whole
/// story.)
///
/// # Errors
/// No such member, no one to hand leadership to, leadership did not move
/// within [`LEADER_MOVE_WAIT`], or the cluster refused a change.
pub(crate) async fn decommission(
    clients: &Clients,
    format: OutputFormat,
    given: &str,
) -> Result<(), CtlError> {
    let view = ClusterView::gather(clients).await?;
    let members: Vec<Member> = view.members.iter().map(|m| m.member.clone()).collect();
    let member = find(&members, given)?.clone();
    let name = label(&member);
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
    fn members_are_found_by_name_or_hex_id() {
        let members = [member(0xabc, "n1"), member(0x1f, "n2")];
        assert_eq!(find(&members, "n2").unwrap().id, 0x1f);
        assert_eq!(find(&members, "0000000000000abc").unwrap().name, "n1");
        let error = find(&members, "n9").unwrap_err().to_string();
        assert!(error.contains("n1 (0000000000000abc)"), "{error}");
    }
}
