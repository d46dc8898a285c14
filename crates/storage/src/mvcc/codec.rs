//! The binary encoding of commands: what goes into a Raft log entry.
//!
//! Built on [`ringkv_consensus::codec`]: varints, length-prefixed bytes,
//! one tag byte per enum. Signed numbers (revisions, leases, TTLs, limits)
//! are zigzag varints, so the usual small non-negative values take a byte
//! or two and the "latest" sentinels stay cheap. A command starts with a
//! format byte so the encoding can evolve without guessing.

use bytes::Bytes;
use ringkv_consensus::codec::{CodecError, Decoder, Wire, put_bytes, put_i64, put_varint};

use super::NESTED_TXN_DEPTH_MAX;
use super::types::{
    Command, CompactionRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseId, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, Revision, SortOrder, SortTarget, TxnRequest,
};

/// Format of encoded commands.
const COMMAND_FORMAT: u8 = 1;

impl Wire for RangeRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, &self.key);
        put_bytes(out, &self.range_end);
        put_i64(out, self.limit);
        put_i64(out, self.revision.0);
        out.push(match self.sort_order {
            SortOrder::None => 0,
            SortOrder::Ascend => 1,
            SortOrder::Descend => 2,
        });
        out.push(match self.sort_target {
            SortTarget::Key => 0,
            SortTarget::Version => 1,
            SortTarget::Create => 2,
            SortTarget::Mod => 3,
            SortTarget::Value => 4,
        });
        let flags = u8::from(self.serializable)
            | u8::from(self.keys_only) << 1
            | u8::from(self.count_only) << 2;
        out.push(flags);
        for r in [
            self.min_mod_revision,
            self.max_mod_revision,
            self.min_create_revision,
            self.max_create_revision,
        ] {
            put_i64(out, r.0);
        }
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        let key = d.bytes()?;
        let range_end = d.bytes()?;
        let limit = d.i64()?;
        let revision = Revision(d.i64()?);
        let sort_order = [SortOrder::None, SortOrder::Ascend, SortOrder::Descend]
            [d.tag("sort order", 2)? as usize];
        let sort_target = [
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value,
        ][d.tag("sort target", 4)? as usize];
        let flags = d.tag("range flags", 0b111)?;
        Ok(RangeRequest {
            key,
            range_end,
            limit,
            revision,
            sort_order,
            sort_target,
            serializable: flags & 1 != 0,
            keys_only: flags & 2 != 0,
            count_only: flags & 4 != 0,
            min_mod_revision: Revision(d.i64()?),
            max_mod_revision: Revision(d.i64()?),
            min_create_revision: Revision(d.i64()?),
            max_create_revision: Revision(d.i64()?),
        })
    }
}

impl Wire for PutRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, &self.key);
        put_bytes(out, &self.value);
        put_i64(out, self.lease.0);
        out.push(
            u8::from(self.prev_kv)
                | u8::from(self.ignore_value) << 1
                | u8::from(self.ignore_lease) << 2,
        );
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        let key = d.bytes()?;
        let value = d.bytes()?;
        let lease = LeaseId(d.i64()?);
        let flags = d.tag("put flags", 0b111)?;
        Ok(PutRequest {
            key,
            value,
            lease,
            prev_kv: flags & 1 != 0,
            ignore_value: flags & 2 != 0,
            ignore_lease: flags & 4 != 0,
        })
    }
}

impl Wire for DeleteRangeRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, &self.key);
        put_bytes(out, &self.range_end);
        self.prev_kv.encode(out);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(DeleteRangeRequest { key: d.bytes()?, range_end: d.bytes()?, prev_kv: d.bool()? })
    }
}

impl Wire for Compare {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(match self.result {
            CompareResult::Equal => 0,
            CompareResult::Greater => 1,
            CompareResult::Less => 2,
            CompareResult::NotEqual => 3,
        });
        match &self.target {
            CompareTarget::Version(v) => {
                out.push(0);
                put_i64(out, *v);
            }
            CompareTarget::Create(r) => {
                out.push(1);
                put_i64(out, r.0);
            }
            CompareTarget::Mod(r) => {
                out.push(2);
                put_i64(out, r.0);
            }
            CompareTarget::Value(v) => {
                out.push(3);
                put_bytes(out, v);
            }
            CompareTarget::Lease(l) => {
                out.push(4);
                put_i64(out, l.0);
            }
        }
        put_bytes(out, &self.key);
        put_bytes(out, &self.range_end);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        let result = [
            CompareResult::Equal,
            CompareResult::Greater,
            CompareResult::Less,
            CompareResult::NotEqual,
        ][d.tag("compare result", 3)? as usize];
        let target = match d.tag("compare target", 4)? {
            0 => CompareTarget::Version(d.i64()?),
            1 => CompareTarget::Create(Revision(d.i64()?)),
            2 => CompareTarget::Mod(Revision(d.i64()?)),
            3 => CompareTarget::Value(d.bytes()?),
            _ => CompareTarget::Lease(LeaseId(d.i64()?)),
        };
        Ok(Compare { result, target, key: d.bytes()?, range_end: d.bytes()? })
    }
}

fn encode_ops(ops: &[RequestOp], out: &mut Vec<u8>) {
    put_varint(out, ops.len() as u64);
    for op in ops {
        match op {
            RequestOp::Range(r) => {
                out.push(0);
                r.encode(out);
            }
            RequestOp::Put(p) => {
                out.push(1);
                p.encode(out);
            }
            RequestOp::DeleteRange(r) => {
                out.push(2);
                r.encode(out);
            }
            RequestOp::Txn(t) => {
                out.push(3);
                t.encode(out);
            }
        }
    }
}

fn decode_ops(d: &mut Decoder, depth: usize) -> Result<Vec<RequestOp>, CodecError> {
    // Every op takes at least its tag byte and two length bytes.
    let n = d.len(3)?;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        ops.push(match d.tag("request op", 3)? {
            0 => RequestOp::Range(RangeRequest::decode(d)?),
            1 => RequestOp::Put(PutRequest::decode(d)?),
            2 => RequestOp::DeleteRange(DeleteRangeRequest::decode(d)?),
            _ => RequestOp::Txn(decode_txn(d, depth + 1)?),
        });
    }
    Ok(ops)
}

fn decode_txn(d: &mut Decoder, depth: usize) -> Result<TxnRequest, CodecError> {
    // Bounded so that hostile input cannot overflow the stack.
    if depth > NESTED_TXN_DEPTH_MAX {
        return Err(d.invalid("txn (nested too deep)"));
    }
    Ok(TxnRequest {
        compare: Vec::<Compare>::decode(d)?,
        success: decode_ops(d, depth)?,
        failure: decode_ops(d, depth)?,
    })
}

impl Wire for TxnRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        self.compare.encode(out);
        encode_ops(&self.success, out);
        encode_ops(&self.failure, out);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        decode_txn(d, 0)
    }
}

impl Wire for LeaseCheckpoint {
    fn encode(&self, out: &mut Vec<u8>) {
        put_i64(out, self.id.0);
        put_i64(out, self.remaining_ttl);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(LeaseCheckpoint { id: LeaseId(d.i64()?), remaining_ttl: d.i64()? })
    }
}

impl Wire for Command {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(COMMAND_FORMAT);
        match self {
            Command::Put(p) => {
                out.push(0);
                p.encode(out);
            }
            Command::DeleteRange(r) => {
                out.push(1);
                r.encode(out);
            }
            Command::Txn(t) => {
                out.push(2);
                t.encode(out);
            }
            Command::Compaction(c) => {
                out.push(3);
                put_i64(out, c.revision.0);
                c.physical.encode(out);
            }
            Command::LeaseGrant(g) => {
                out.push(4);
                put_i64(out, g.id.0);
                put_i64(out, g.ttl);
            }
            Command::LeaseRevoke(r) => {
                out.push(5);
                put_i64(out, r.id.0);
            }
            Command::LeaseCheckpoint(c) => {
                out.push(6);
                c.checkpoints.encode(out);
            }
        }
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        let at = d.position();
        let format = d.u8()?;
        if format != COMMAND_FORMAT {
            return Err(CodecError::BadTag { what: "command format", tag: format, at });
        }
        Ok(match d.tag("command", 6)? {
            0 => Command::Put(PutRequest::decode(d)?),
            1 => Command::DeleteRange(DeleteRangeRequest::decode(d)?),
            2 => Command::Txn(TxnRequest::decode(d)?),
            3 => Command::Compaction(CompactionRequest {
                revision: Revision(d.i64()?),
                physical: d.bool()?,
            }),
            4 => Command::LeaseGrant(LeaseGrantRequest { id: LeaseId(d.i64()?), ttl: d.i64()? }),
            5 => Command::LeaseRevoke(LeaseRevokeRequest { id: LeaseId(d.i64()?) }),
            _ => Command::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints: Vec::decode(d)? }),
        })
    }
}

impl Command {
    /// The command's log payload.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(ringkv_consensus::codec::encode_to_vec(self))
    }

    /// Decodes a log payload.
    ///
    /// # Errors
    /// The payload is not exactly one well-formed command.
    pub fn from_bytes(payload: Bytes) -> Result<Command, CodecError> {
        ringkv_consensus::codec::decode_exact(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused() {
        let mut t = TxnRequest::default();
        for _ in 0..NESTED_TXN_DEPTH_MAX + 2 {
            t = TxnRequest { success: vec![RequestOp::Txn(t)], ..TxnRequest::default() };
        }
        let bytes = Command::Txn(t).to_bytes();
        assert!(matches!(Command::from_bytes(bytes), Err(CodecError::Invalid { .. })));
    }
}
