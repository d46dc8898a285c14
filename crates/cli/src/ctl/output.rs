//! How `ringkv ctl` prints: aligned tables (or etcdctl's plain lines) for
//! people, JSON for scripts (`-w json`).
//!
//! JSON conventions, the same in every command: member and cluster ids are
//! 16-digit hex strings (as etcdctl prints them; a `u64` does not survive
//! JavaScript's numbers); sizes end in `_bytes`; keys and values are strings
//! when they are UTF-8, otherwise they appear as `key_base64` /
//! `value_base64` instead.

use std::io::Write;

use base64::Engine as _;
use ringkv_api::etcdserverpb::ResponseHeader;
use ringkv_api::mvccpb::KeyValue;
use serde_json::{Value, json};

/// `-w`: what the output is for.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// For people: tables, or etcdctl's plain lines for keys and values.
    #[default]
    Table,
    /// For scripts: one JSON document (one per line for `watch`).
    Json,
}

/// Writes `text` to stdout. A closed pipe (`| head`) is not an error
/// worth a message: the reader has what it wanted.
pub(crate) fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Prints `value` as one line of JSON.
pub(crate) fn print_json(value: &Value) {
    print(&format!("{value}\n"));
}

/// A member or cluster id as etcd prints it.
pub(crate) fn hex_id(id: u64) -> String {
    format!("{id:016x}")
}

/// A response header as JSON.
pub(crate) fn header_json(header: Option<&ResponseHeader>) -> Value {
    let header = header.copied().unwrap_or_default();
    json!({
        "cluster_id": hex_id(header.cluster_id),
        "member_id": hex_id(header.member_id),
        "revision": header.revision,
        "raft_term": header.raft_term,
    })
}

/// Sets `name` (UTF-8) or `name_base64` on `object` for `bytes`.
pub(crate) fn put_bytes(object: &mut serde_json::Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(name.to_owned(), Value::from(text)),
        Err(_) => object.insert(
            format!("{name}_base64"),
            Value::from(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    };
}

/// A key-value pair as JSON.
pub(crate) fn kv_json(kv: &KeyValue) -> Value {
    let mut object = serde_json::Map::new();
    put_bytes(&mut object, "key", &kv.key);
    put_bytes(&mut object, "value", &kv.value);
    object.insert("create_revision".into(), kv.create_revision.into());
    object.insert("mod_revision".into(), kv.mod_revision.into());
    object.insert("version".into(), kv.version.into());
    object.insert("lease".into(), kv.lease.into());
    Value::Object(object)
}

/// Bytes as people read them: `512 B`, `20.0 KiB`, `1.5 MiB`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A table with a header row, columns left-aligned and padded to their
/// widest cell, two spaces apart (as kubectl prints).
#[derive(Debug)]
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column titles.
    pub(crate) fn new(header: Vec<&'static str>) -> Table {
        Table { header, rows: Vec::new() }
    }

    /// Adds a row.
    ///
    /// # Panics
    /// If it has not one cell per column (a bug in the caller).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.header.len(), "one cell per column");
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub(crate) fn render(&self) -> String {
        let width = |column: usize| {
            self.rows
                .iter()
                .map(|row| row[column].chars().count())
                .chain(std::iter::once(self.header[column].len()))
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.header.len()).map(width).collect();
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut text = String::new();
            for (i, cell) in cells.enumerate() {
                if i + 1 == widths.len() {
                    text.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    text.push_str(cell);
                    text.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            text.truncate(text.trim_end().len());
            text.push('\n');
            text
        };
        let mut out = line(&mut self.header.iter().copied());
        for row in &self.rows {
            out.push_str(&line(&mut row.iter().map(String::as_str)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_on_their_widest_cell() {
        let mut table = Table::new(vec!["NAME", "HEALTH", "SIZE"]);
        table.row(vec!["n1".into(), "healthy".into(), "20.0 KiB".into()]);
        table.row(vec!["node-two".into(), "unreachable".into(), "-".into()]);
        assert_eq!(
            table.render(),
            "NAME      HEALTH       SIZE\n\
             n1        healthy      20.0 KiB\n\
             node-two  unreachable  -\n"
        );
    }

    #[test]
    fn bytes_read_as_people_read_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(20 * 1024 + 512), "20.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn keys_are_text_when_they_can_be_and_base64_otherwise() {
        let kv = KeyValue { key: b"k".to_vec(), value: vec![0xff, 0x00], ..KeyValue::default() };
        let json = kv_json(&kv);
        assert_eq!(json["key"], "k");
        assert!(json.get("value").is_none());
        assert_eq!(json["value_base64"], "/wA=");
    }
}
