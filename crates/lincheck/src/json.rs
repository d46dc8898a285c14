//! The JSON-lines history format (described in the crate documentation):
//! parsing with line-numbered errors, and writing.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::history::{
    Call, CallKind, Compare, Found, History, HistoryError, KeyValue, Operation, Outcome, ProcessId,
    Ret, Revision, Timestamp,
};

/// A line of a JSON-lines history that could not be used; nothing past it was read.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub kind: ParseErrorKind,
}

/// What is wrong with a line of a JSON-lines history.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// Not JSON, or not one of the line shapes the format defines.
    #[error("not a valid history line: {0}")]
    Json(#[source] serde_json::Error),
    /// A `{"hex": ...}` byte string that is not hex.
    #[error("{text:?} is not an even-length hex string")]
    InvalidHex {
        /// The offending text.
        text: String,
    },
    /// An ok completion of a call whose result carries data, without `result`.
    #[error("an ok {call} needs a \"result\" object (see the crate docs for its fields)")]
    MissingResult {
        /// The call's kind.
        call: CallKind,
    },
    /// A `result` whose fields do not fit the call.
    #[error("bad \"result\" for a {call}: {source}")]
    BadResult {
        /// The call's kind.
        call: CallKind,
        /// The field error.
        source: serde_json::Error,
    },
    /// A get result without its `value` field (`null` means absent).
    #[error("a get result needs \"value\": the value read, or null when the key was absent")]
    MissingValue,
    /// A failed or unknown operation with a `result`.
    #[error("a {outcome} operation has no result; remove \"result\"")]
    UnexpectedResult {
        /// `fail` or `unknown`.
        outcome: &'static str,
    },
    /// A `cas` whose `expect` names neither or both of `value` and `mod_revision`.
    #[error("a cas \"expect\" needs exactly one of \"value\" (null: absent) and \"mod_revision\"")]
    BadExpect,
    /// The line is well formed but breaks a rule of histories.
    #[error(transparent)]
    History(#[from] HistoryError),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonBytes {
    Text(String),
    Hex { hex: String },
}

impl JsonBytes {
    fn into_bytes(self) -> Result<Bytes, ParseErrorKind> {
        match self {
            JsonBytes::Text(text) => Ok(Bytes::from(text)),
            JsonBytes::Hex { hex } => {
                decode_hex(&hex).ok_or(ParseErrorKind::InvalidHex { text: hex })
            }
        }
    }
}

fn decode_hex(text: &str) -> Option<Bytes> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect::<Option<Vec<u8>>>()
        .map(Bytes::from)
}

/// Deserialize a field that may be `null`, distinguishing it from a missing one.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonExpect {
    #[serde(default, deserialize_with = "present")]
    value: Option<Option<JsonBytes>>,
    mod_revision: Option<u64>,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum JsonCall {
    Get { key: JsonBytes },
    Put { key: JsonBytes, value: JsonBytes },
    Delete { key: JsonBytes },
    Cas { key: JsonBytes, expect: JsonExpect, value: JsonBytes },
    Range { keys: Vec<JsonBytes> },
}

impl JsonCall {
    fn into_call(self) -> Result<Call, ParseErrorKind> {
        Ok(match self {
            JsonCall::Get { key } => Call::Get { key: key.into_bytes()? },
            JsonCall::Put { key, value } => {
                Call::Put { key: key.into_bytes()?, value: value.into_bytes()? }
            }
            JsonCall::Delete { key } => Call::Delete { key: key.into_bytes()? },
            JsonCall::Cas { key, expect, value } => {
                let compare = match (expect.value, expect.mod_revision) {
                    (Some(v), None) => Compare::Value(v.map(JsonBytes::into_bytes).transpose()?),
                    (None, Some(r)) => Compare::ModRevision(Revision(r)),
                    _ => return Err(ParseErrorKind::BadExpect),
                };
                Call::CompareAndSet { key: key.into_bytes()?, compare, value: value.into_bytes()? }
            }
            JsonCall::Range { keys } => Call::Range {
                keys: keys.into_iter().map(JsonBytes::into_bytes).collect::<Result<_, _>>()?,
            },
        })
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum JsonOutcome {
    Ok,
    Fail,
    Unknown,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum JsonLine {
    Invoke {
        process: u64,
        time: u64,
        call: JsonCall,
    },
    Ok {
        process: u64,
        time: u64,
        result: Option<Value>,
    },
    Fail {
        process: u64,
        time: u64,
        result: Option<Value>,
    },
    Unknown {
        process: u64,
        time: u64,
        result: Option<Value>,
    },
    Op {
        process: u64,
        invoked_at: u64,
        completed_at: Option<u64>,
        call: JsonCall,
        outcome: JsonOutcome,
        result: Option<Value>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonGet {
    #[serde(default, deserialize_with = "present")]
    value: Option<Option<JsonBytes>>,
    mod_revision: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPut {
    revision: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonDelete {
    deleted: Option<bool>,
    revision: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCas {
    succeeded: bool,
    revision: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonKv {
    key: JsonBytes,
    value: JsonBytes,
    mod_revision: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRange {
    kvs: Vec<JsonKv>,
}

fn field<T: for<'de> Deserialize<'de>>(call: CallKind, value: Value) -> Result<T, ParseErrorKind> {
    serde_json::from_value(value).map_err(|source| ParseErrorKind::BadResult { call, source })
}

/// Turn a JSON `result` into a [`Ret`] for a call of kind `call`.
fn ret(call: CallKind, result: Option<Value>) -> Result<Ret, ParseErrorKind> {
    let result = match result {
        Some(result) => result,
        // A put or delete result carries only optional fields.
        None if matches!(call, CallKind::Put | CallKind::Delete) => Value::Object(Map::new()),
        None => return Err(ParseErrorKind::MissingResult { call }),
    };
    let rev = |r: Option<u64>| r.map(Revision);
    Ok(match call {
        CallKind::Get => {
            let get: JsonGet = field(call, result)?;
            let value = get.value.ok_or(ParseErrorKind::MissingValue)?;
            Ret::Get(match value {
                None => None,
                Some(v) => {
                    Some(Found { value: v.into_bytes()?, mod_revision: rev(get.mod_revision) })
                }
            })
        }
        CallKind::Put => Ret::Put { revision: rev(field::<JsonPut>(call, result)?.revision) },
        CallKind::Delete => {
            let d: JsonDelete = field(call, result)?;
            Ret::Delete { deleted: d.deleted, revision: rev(d.revision) }
        }
        CallKind::CompareAndSet => {
            let c: JsonCas = field(call, result)?;
            Ret::CompareAndSet { succeeded: c.succeeded, revision: rev(c.revision) }
        }
        CallKind::Range => {
            let r: JsonRange = field(call, result)?;
            Ret::Range(
                r.kvs
                    .into_iter()
                    .map(|kv| {
                        Ok(KeyValue {
                            key: kv.key.into_bytes()?,
                            value: kv.value.into_bytes()?,
                            mod_revision: rev(kv.mod_revision),
                        })
                    })
                    .collect::<Result<_, ParseErrorKind>>()?,
            )
        }
    })
}

fn outcome(
    kind: JsonOutcome,
    call: CallKind,
    result: Option<Value>,
) -> Result<Outcome, ParseErrorKind> {
    match (kind, result) {
        (JsonOutcome::Ok, result) => Ok(Outcome::Ok(ret(call, result)?)),
        (JsonOutcome::Fail, None) => Ok(Outcome::Fail),
        (JsonOutcome::Unknown, None) => Ok(Outcome::Unknown),
        (JsonOutcome::Fail, Some(_)) => Err(ParseErrorKind::UnexpectedResult { outcome: "fail" }),
        (JsonOutcome::Unknown, Some(_)) => {
            Err(ParseErrorKind::UnexpectedResult { outcome: "unknown" })
        }
    }
}

fn parse_line(history: &mut History, line: &str) -> Result<(), ParseErrorKind> {
    let parsed: JsonLine = serde_json::from_str(line).map_err(ParseErrorKind::Json)?;
    let complete = |history: &mut History, process: u64, time: u64, kind, result| {
        let process = ProcessId(process);
        let call = history
            .outstanding(process)
            .map(|id| history.ops()[id.0].call.kind())
            .ok_or(HistoryError::NothingOutstanding { process })?;
        let outcome = outcome(kind, call, result)?;
        history.complete(process, outcome, Timestamp(time))?;
        Ok(())
    };
    match parsed {
        JsonLine::Invoke { process, time, call } => {
            history.invoke(ProcessId(process), call.into_call()?, Timestamp(time))?;
            Ok(())
        }
        JsonLine::Ok { process, time, result } => {
            complete(history, process, time, JsonOutcome::Ok, result)
        }
        JsonLine::Fail { process, time, result } => {
            complete(history, process, time, JsonOutcome::Fail, result)
        }
        JsonLine::Unknown { process, time, result } => {
            complete(history, process, time, JsonOutcome::Unknown, result)
        }
        JsonLine::Op { process, invoked_at, completed_at, call, outcome: kind, result } => {
            let call = call.into_call()?;
            let outcome = outcome(kind, call.kind(), result)?;
            history.push(Operation {
                process: ProcessId(process),
                call,
                outcome,
                invoked_at: Timestamp(invoked_at),
                completed_at: completed_at.map(Timestamp),
            })?;
            Ok(())
        }
    }
}

/// Parse a JSON-lines history (format in the crate documentation). Blank
/// lines are skipped. Operations still outstanding at the end are of
/// unknown outcome.
///
/// # Errors
///
/// The first line that is not valid JSON, not a line shape of the format, or
/// breaks a rule of [`History`], with its 1-based number.
pub fn parse_jsonl(input: &str) -> Result<History, ParseError> {
    let mut history = History::new();
    for (i, line) in input.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        parse_line(&mut history, line).map_err(|kind| ParseError { line: i + 1, kind })?;
    }
    Ok(history)
}

fn bytes_json(b: &Bytes) -> Value {
    match std::str::from_utf8(b) {
        Ok(text) => Value::String(text.to_string()),
        Err(_) => {
            let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
            json!({ "hex": hex })
        }
    }
}

fn call_json(call: &Call) -> Value {
    match call {
        Call::Get { key } => json!({"op": "get", "key": bytes_json(key)}),
        Call::Put { key, value } => {
            json!({"op": "put", "key": bytes_json(key), "value": bytes_json(value)})
        }
        Call::Delete { key } => json!({"op": "delete", "key": bytes_json(key)}),
        Call::CompareAndSet { key, compare, value } => {
            let expect = match compare {
                Compare::Value(v) => json!({"value": v.as_ref().map(bytes_json)}),
                Compare::ModRevision(r) => json!({"mod_revision": r.0}),
            };
            json!({"op": "cas", "key": bytes_json(key), "expect": expect, "value": bytes_json(value)})
        }
        Call::Range { keys } => {
            json!({"op": "range", "keys": keys.iter().map(bytes_json).collect::<Vec<_>>()})
        }
    }
}

fn ret_json(ret: &Ret) -> Value {
    let mut map = Map::new();
    let put_rev = |map: &mut Map<String, Value>, name: &str, r: &Option<Revision>| {
        if let Some(r) = r {
            map.insert(name.to_string(), json!(r.0));
        }
    };
    match ret {
        Ret::Get(found) => {
            map.insert(
                "value".into(),
                found.as_ref().map_or(Value::Null, |f| bytes_json(&f.value)),
            );
            put_rev(&mut map, "mod_revision", &found.as_ref().and_then(|f| f.mod_revision));
        }
        Ret::Put { revision } => put_rev(&mut map, "revision", revision),
        Ret::Delete { deleted, revision } => {
            if let Some(d) = deleted {
                map.insert("deleted".into(), json!(d));
            }
            put_rev(&mut map, "revision", revision);
        }
        Ret::CompareAndSet { succeeded, revision } => {
            map.insert("succeeded".into(), json!(succeeded));
            put_rev(&mut map, "revision", revision);
        }
        Ret::Range(kvs) => {
            let kvs: Vec<Value> = kvs
                .iter()
                .map(|kv| {
                    let mut m = Map::new();
                    m.insert("key".into(), bytes_json(&kv.key));
                    m.insert("value".into(), bytes_json(&kv.value));
                    put_rev(&mut m, "mod_revision", &kv.mod_revision);
                    Value::Object(m)
                })
                .collect();
            map.insert("kvs".into(), Value::Array(kvs));
        }
    }
    Value::Object(map)
}

/// One completed-operation line (`"type": "op"`) for `op`, without newline.
pub fn operation_json_line(op: &Operation) -> String {
    let mut line = Map::new();
    line.insert("type".into(), json!("op"));
    line.insert("process".into(), json!(op.process.0));
    line.insert("invoked_at".into(), json!(op.invoked_at.0));
    if let Some(c) = op.completed_at {
        line.insert("completed_at".into(), json!(c.0));
    }
    line.insert("call".into(), call_json(&op.call));
    let (outcome, result) = match &op.outcome {
        Outcome::Ok(ret) => ("ok", Some(ret_json(ret))),
        Outcome::Fail => ("fail", None),
        Outcome::Unknown => ("unknown", None),
    };
    line.insert("outcome".into(), json!(outcome));
    if let Some(result) = result {
        line.insert("result".into(), result);
    }
    Value::Object(line).to_string()
}

/// Write `history` as JSON lines, one completed-operation line per
/// operation in [`OpId`](crate::OpId) order; [`parse_jsonl`] reads it back.
pub fn to_jsonl(history: &History) -> String {
    let mut out = String::new();
    for op in history.ops() {
        out.push_str(&operation_json_line(op));
        out.push('\n');
    }
    out
}
