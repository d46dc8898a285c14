//! `put`, `get`, `del` and `watch`: conveniences over the etcd v3 KV and
//! Watch services, so they work against any etcd as well as ringkv. The
//! human output is etcdctl's (`OK`; key and value lines; a count).

use futures_util::StreamExt as _;
use ringkv_api::etcdserverpb::kv_client::KvClient;
use ringkv_api::etcdserverpb::watch_client::WatchClient;
use ringkv_api::etcdserverpb::watch_request::RequestUnion;
use ringkv_api::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
};
use ringkv_api::mvccpb::event::EventType;
use serde_json::{Value, json};

use super::client::Clients;
use super::error::CtlError;
use super::output::{OutputFormat, header_json, kv_json, print, print_json, put_bytes};

/// The key range a command works on (etcdctl's arguments and flags).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct KeyRange {
    /// The key, or the start of the range.
    key: String,
    /// End of the range, exclusive (the range is [KEY, RANGE_END)).
    range_end: Option<String>,
    /// Every key that starts with KEY.
    #[arg(long, conflicts_with_all = ["range_end", "from_key"])]
    prefix: bool,
    /// Every key from KEY on (in byte order).
    #[arg(long, conflicts_with = "range_end")]
    from_key: bool,
}

impl KeyRange {
    /// The `key` and `range_end` fields of the request.
    fn bounds(&self) -> (Vec<u8>, Vec<u8>) {
        let key = self.key.as_bytes().to_vec();
        let end = if self.prefix {
            prefix_end(&key)
        } else if self.from_key {
            // etcd's convention: "\0" as range_end means "to the end".
            vec![0]
        } else {
            self.range_end.as_ref().map(|e| e.as_bytes().to_vec()).unwrap_or_default()
        };
        (key, end)
    }
}

/// The smallest key greater than every key with `prefix` (etcd's rule: an
/// all-`0xff` or empty prefix means "to the end", `"\0"`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `ringkv ctl put KEY VALUE`.
///
/// # Errors
/// The write failed on every endpoint, or was refused.
pub(crate) async fn put(
    clients: &Clients,
    format: OutputFormat,
    key: &str,
    value: &str,
    lease: i64,
    prev_kv: bool,
) -> Result<(), CtlError> {
    let request =
        PutRequest { key: key.into(), value: value.into(), lease, prev_kv, ..Default::default() };
    let (_, response) = clients
        .call_any("KV.Put", false, async |channel| {
            Ok(KvClient::new(channel).put(request.clone()).await?.into_inner())
        })
        .await?;
    match format {
        OutputFormat::Table => {
            let mut text = "OK\n".to_owned();
            if let Some(prev) = &response.prev_kv {
                text.push_str(&format!(
                    "{}\n{}\n",
                    String::from_utf8_lossy(&prev.key),
                    String::from_utf8_lossy(&prev.value)
                ));
            }
            print(&text);
        }
        OutputFormat::Json => print_json(&json!({
            "header": header_json(response.header.as_ref()),
            "prev_kv": response.prev_kv.as_ref().map(kv_json),
        })),
    }
    Ok(())
}

/// What `get` prints.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct GetOptions {
    /// At most this many keys (0: no limit).
    #[arg(long, default_value_t = 0)]
    limit: i64,
    /// Read as of this revision (0: the latest).
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// Keys only, no values.
    #[arg(long)]
    keys_only: bool,
    /// Values only, no keys.
    #[arg(long, conflicts_with = "keys_only")]
    print_value_only: bool,
    /// Serve the read from the member asked, without asking the leader
    /// (faster, possibly stale).
    #[arg(long)]
    serializable: bool,
}

/// `ringkv ctl get KEY [RANGE_END]`.
///
/// # Errors
/// The read failed on every endpoint, or was refused.
pub(crate) async fn get(
    clients: &Clients,
    format: OutputFormat,
    range: &KeyRange,
    options: &GetOptions,
) -> Result<(), CtlError> {
    let (key, range_end) = range.bounds();
    let request = RangeRequest {
        key,
        range_end,
        limit: options.limit,
        revision: options.rev,
        keys_only: options.keys_only,
        serializable: options.serializable,
        ..Default::default()
    };
    let (_, response) = clients
        .call_any("KV.Range", false, async |channel| {
            Ok(KvClient::new(channel).range(request.clone()).await?.into_inner())
        })
        .await?;
    match format {
        OutputFormat::Table => {
            let mut text = String::new();
            for kv in &response.kvs {
                if !options.print_value_only {
                    text.push_str(&String::from_utf8_lossy(&kv.key));
                    text.push('\n');
                }
                if !options.keys_only {
                    text.push_str(&String::from_utf8_lossy(&kv.value));
                    text.push('\n');
                }
            }
            print(&text);
        }
        OutputFormat::Json => print_json(&json!({
            "header": header_json(response.header.as_ref()),
            "kvs": response.kvs.iter().map(kv_json).collect::<Vec<_>>(),
            "count": response.count,
            "more": response.more,
        })),
    }
    Ok(())
}

/// `ringkv ctl del KEY [RANGE_END]`.
///
/// # Errors
/// The delete failed on every endpoint, or was refused.
pub(crate) async fn del(
    clients: &Clients,
    format: OutputFormat,
    range: &KeyRange,
    prev_kv: bool,
) -> Result<(), CtlError> {
    let (key, range_end) = range.bounds();
    let request = DeleteRangeRequest { key, range_end, prev_kv };
    let (_, response) = clients
        .call_any("KV.DeleteRange", false, async |channel| {
            Ok(KvClient::new(channel).delete_range(request.clone()).await?.into_inner())
        })
        .await?;
    match format {
        OutputFormat::Table => {
            let mut text = format!("{}\n", response.deleted);
            for kv in &response.prev_kvs {
                text.push_str(&format!(
                    "{}\n{}\n",
                    String::from_utf8_lossy(&kv.key),
                    String::from_utf8_lossy(&kv.value)
                ));
            }
            print(&text);
        }
        OutputFormat::Json => print_json(&json!({
            "header": header_json(response.header.as_ref()),
            "deleted": response.deleted,
            "prev_kvs": response.prev_kvs.iter().map(kv_json).collect::<Vec<_>>(),
        })),
    }
    Ok(())
}

/// `ringkv ctl watch`'s own options.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct WatchOptions {
    /// Start at this revision (0: from now on), replaying history.
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// Show each key's value before the change too.
    #[arg(long)]
    prev_kv: bool,
    /// Stop after this many events (for scripts).
    #[arg(long)]
    max_events: Option<u64>,
}

/// `ringkv ctl watch KEY [RANGE_END]`: prints events until interrupted
/// (or `--max-events`). Human output is etcdctl's: the event type, the
/// key, the value (and the previous ones with `--prev-kv`); JSON output is
/// one object per event per line.
///
/// # Errors
/// The watch could not be created, or the server ended it.
pub(crate) async fn watch(
    clients: &Clients,
    format: OutputFormat,
    range: &KeyRange,
    options: &WatchOptions,
) -> Result<(), CtlError> {
    let (key, range_end) = range.bounds();
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key,
            range_end,
            start_revision: options.rev,
            prev_kv: options.prev_kv,
            ..Default::default()
        })),
    };
    let method = "Watch.Watch";
    let (endpoint, mut responses) = clients
        .call_any(method, true, async |channel| {
            // The request stream stays open (never ends) so the watch lives on.
            let requests =
                futures_util::stream::iter([create.clone()]).chain(futures_util::stream::pending());
            let stream = WatchClient::new(channel).watch(requests).await?.into_inner();
            Ok(stream)
        })
        .await?;
    let mut seen = 0u64;
    if options.max_events == Some(0) {
        return Ok(());
    }
    loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Ok(()),
            Err(status) => return Err(CtlError::rpc(&endpoint, method, status)),
        };
        if response.canceled {
            let reason = if response.cancel_reason.is_empty() {
                format!("compacted at revision {}", response.compact_revision)
            } else {
                response.cancel_reason.clone()
            };
            return Err(CtlError::rpc(
                &endpoint,
                method,
                tonic::Status::cancelled(format!("the server ended the watch: {reason}")),
            ));
        }
        for event in &response.events {
            let kind = match EventType::try_from(event.r#type) {
                Ok(EventType::Delete) => "DELETE",
                _ => "PUT",
            };
            match format {
                OutputFormat::Table => {
                    let mut text = format!("{kind}\n");
                    let line = |bytes: &[u8]| format!("{}\n", String::from_utf8_lossy(bytes));
                    if let Some(prev) = &event.prev_kv {
                        text.push_str(&line(&prev.key));
                        text.push_str(&line(&prev.value));
                    }
                    if let Some(kv) = &event.kv {
                        text.push_str(&line(&kv.key));
                        // A deletion has no value to show.
                        if kind == "PUT" {
                            text.push_str(&line(&kv.value));
                        }
                    }
                    print(&text);
                }
                OutputFormat::Json => {
                    let mut object = serde_json::Map::new();
                    object.insert("type".into(), kind.into());
                    if let Some(kv) = &event.kv {
                        put_bytes(&mut object, "key", &kv.key);
                        object.insert("kv".into(), kv_json(kv));
                    }
                    object.insert(
                        "prev_kv".into(),
                        event.prev_kv.as_ref().map_or(Value::Null, kv_json),
                    );
                    object.insert("header".into(), header_json(response.header.as_ref()));
                    print_json(&Value::Object(object));
                }
            }
            seen += 1;
            if options.max_events.is_some_and(|max| seen >= max) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_where_etcd_says() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
