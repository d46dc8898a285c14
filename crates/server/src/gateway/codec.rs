//! JSON ⇄ prost for the gateway, through `prost-reflect` and the
//! descriptors of `ringkv_api`.
//!
//! Output follows etcd's gateway marshaler (grpc-gateway's `JSONPb` with
//! `OrigName: true`, `EmitDefaults: false`); input is proto3 JSON, as
//! lenient as etcd's where etcd is lenient. See the module docs of
//! [`super`] for the rules.

use std::sync::LazyLock;

use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor,
    SerializeOptions,
};
use ringkv_api::FILE_DESCRIPTOR_SET;

use super::error::GatewayError;
use super::routes::{GatewayRequest, GatewayResponse, Rpc};

/// How responses are printed: proto field names (`create_revision`, `TTL`,
/// `peerURLs`), 64-bit integers as strings, enums by name, fields at their
/// default left out (present messages are printed, even empty).
const SERIALIZE: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .stringify_64_bit_integers(true)
    .use_enum_numbers(false)
    .skip_default_fields(true);

/// How requests are read: strictly (unknown fields and enum names are
/// errors); [`decode_message`] removes unknown fields first, so that they
/// are ignored as etcd's gateway ignores them (a newer client may send
/// fields this server lacks).
const STRICT: DeserializeOptions = DeserializeOptions::new().deny_unknown_fields(true);

/// The request and response descriptors of every [`Rpc`], by
/// `Rpc as usize` (the order of [`Rpc::ALL`]).
static DESCRIPTORS: LazyLock<Vec<(MessageDescriptor, MessageDescriptor)>> = LazyLock::new(|| {
    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET)
        .expect("ringkv_api's build script writes a valid descriptor set");
    Rpc::ALL
        .iter()
        .enumerate()
        .map(|(index, &rpc)| {
            assert_eq!(rpc as usize, index, "Rpc::ALL lists the RPCs in declaration order");
            let service = pool.get_service_by_name(rpc.service()).unwrap_or_else(|| {
                panic!("the route table names service {}, absent from ringkv_api", rpc.service())
            });
            let method =
                service.methods().find(|m| m.name() == rpc.method()).unwrap_or_else(|| {
                    panic!(
                        "the route table names {}/{}, absent from ringkv_api",
                        rpc.service(),
                        rpc.method()
                    )
                });
            (method.input(), method.output())
        })
        .collect()
});

impl Rpc {
    /// The descriptor of this RPC's request message.
    pub fn request_descriptor(self) -> &'static MessageDescriptor {
        &DESCRIPTORS[self as usize].0
    }

    /// The descriptor of this RPC's response message.
    pub fn response_descriptor(self) -> &'static MessageDescriptor {
        &DESCRIPTORS[self as usize].1
    }
}

/// Decodes the body of a request to `rpc` (one JSON object). An empty
/// body (or only whitespace) is the empty request, as in etcd, so
/// `POST /v3/maintenance/status` needs no body.
///
/// # Errors
/// [`GatewayError::MalformedJson`] if the body is not one JSON object of
/// the request type (trailing data included).
pub fn decode_request(rpc: Rpc, body: &[u8]) -> Result<GatewayRequest, GatewayError> {
    let descriptor = rpc.request_descriptor();
    let message = decode_message(descriptor, body)?;
    GatewayRequest::from_dynamic(rpc, &message).map_err(|e| malformed(descriptor, e))
}

/// Decodes a response of `rpc` (for clients of a gateway and for tests).
///
/// # Errors
/// [`GatewayError::MalformedJson`] if the body is not one JSON object of
/// the response type.
pub fn decode_response(rpc: Rpc, body: &[u8]) -> Result<GatewayResponse, GatewayError> {
    let descriptor = rpc.response_descriptor();
    let message = decode_message(descriptor, body)?;
    GatewayResponse::from_dynamic(rpc, &message).map_err(|e| malformed(descriptor, e))
}

/// Encodes a request as etcd's gateway expects it (for clients).
///
/// # Errors
/// [`GatewayError::Encode`] if the message is too deeply nested to convert.
pub fn encode_request(request: &GatewayRequest) -> Result<Vec<u8>, GatewayError> {
    let descriptor = request.rpc().request_descriptor();
    let mut message = DynamicMessage::new(descriptor.clone());
    request.to_dynamic(&mut message).map_err(|e| encode_failed(descriptor, e))?;
    Ok(encode_message(&message))
}

/// Encodes the body of a unary response: one JSON object, no newline.
///
/// # Errors
/// [`GatewayError::Encode`] if the message is too deeply nested to convert
/// (deeper than protobuf decoding allows: a server bug).
pub fn encode_response(response: &GatewayResponse) -> Result<Vec<u8>, GatewayError> {
    let descriptor = response.rpc().response_descriptor();
    let mut message = DynamicMessage::new(descriptor.clone());
    response.to_dynamic(&mut message).map_err(|e| encode_failed(descriptor, e))?;
    Ok(encode_message(&message))
}

/// Encodes one message of a response stream: `{"result":<message>}` and a
/// newline, as etcd's gateway frames watch, keep-alive, snapshot and
/// observe streams.
///
/// # Errors
/// As [`encode_response`].
pub fn encode_stream_message(response: &GatewayResponse) -> Result<Vec<u8>, GatewayError> {
    const OPEN: &[u8] = br#"{"result":"#;
    const CLOSE: &[u8] = b"}\n";
    let inner = encode_response(response)?;
    let mut framed = Vec::with_capacity(OPEN.len() + inner.len() + CLOSE.len());
    framed.extend_from_slice(OPEN);
    framed.extend_from_slice(&inner);
    framed.extend_from_slice(CLOSE);
    Ok(framed)
}

/// Splits a request stream's body (Watch, LeaseKeepAlive) into requests.
///
/// etcd's gateway reads a streaming call's body as consecutive JSON
/// objects (`{"ID":1}{"ID":1}` or one per line) and sends each as it
/// completes. Feed the body as it arrives with [`RequestStream::push`];
/// each call returns the requests completed so far. Work is linear in the
/// body: each byte is scanned once and each object decoded once.
///
/// On a malformed object the stream is broken and the caller ends the
/// call. (etcd 3.4 answers a malformed *first* object with HTTP 500 and
/// gRPC code Unknown, and silently stops reading after a malformed later
/// one; ringkv answers both with the [`GatewayError::MalformedJson`]
/// error, code InvalidArgument.)
#[derive(Debug)]
pub struct RequestStream {
    rpc: Rpc,
    /// Bytes received and not yet returned as requests. Invariant: holds
    /// no complete object; `buffer[..start]` is whitespace when `depth`
    /// is 0.
    buffer: Vec<u8>,
    /// Where the object being read starts in `buffer`.
    start: usize,
    /// How much of `buffer` has been scanned.
    scanned: usize,
    /// Brackets open in the object being read; 0 between objects.
    depth: usize,
    /// Whether the scan is inside a string (brackets there do not count).
    in_string: bool,
    /// Whether the previous byte was a backslash inside a string.
    escaped: bool,
    /// The largest object buffered before it completes.
    message_bytes_max: usize,
}

impl RequestStream {
    /// A stream of requests to `rpc`; a single object larger than
    /// `message_bytes_max` bytes is refused rather than buffered.
    pub fn new(rpc: Rpc, message_bytes_max: usize) -> RequestStream {
        RequestStream {
            rpc,
            buffer: Vec::new(),
            start: 0,
            scanned: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            message_bytes_max,
        }
    }

    /// Takes the next piece of the body and returns the requests it
    /// completes, in order.
    ///
    /// # Errors
    /// [`GatewayError::MalformedJson`] for something other than a JSON
    /// object or an object that is not a request of the stream's type;
    /// [`GatewayError::BodyTooLarge`] for an object over the limit.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<GatewayRequest>, GatewayError> {
        self.buffer.extend_from_slice(chunk);
        let mut requests = Vec::new();
        let mut consumed = 0;
        for index in self.scanned..self.buffer.len() {
            let byte = self.buffer[index];
            if self.depth == 0 {
                match byte {
                    b' ' | b'\t' | b'\n' | b'\r' => consumed = index + 1,
                    b'{' => {
                        self.depth = 1;
                        self.start = index;
                    }
                    _ => {
                        return Err(GatewayError::MalformedJson {
                            message_type: self.rpc.request_descriptor().full_name().to_owned(),
                            detail: format!(
                                "expected a JSON object, found {:?} at byte {index} of the \
                                 unread stream",
                                char::from(byte)
                            ),
                        });
                    }
                }
            } else if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
            } else {
                match byte {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            let object = &self.buffer[self.start..=index];
                            requests.push(decode_request(self.rpc, object)?);
                            consumed = index + 1;
                        }
                    }
                    _ => {}
                }
            }
        }
        self.buffer.drain(..consumed);
        self.scanned = self.buffer.len();
        self.start = self.start.saturating_sub(consumed);
        if self.buffer.len() > self.message_bytes_max {
            return Err(GatewayError::BodyTooLarge { limit_bytes: self.message_bytes_max });
        }
        debug_assert!(self.depth > 0 || self.buffer.is_empty(), "whitespace is consumed");
        Ok(requests)
    }

    /// Ends the stream (the body is complete).
    ///
    /// # Errors
    /// [`GatewayError::MalformedJson`] if the body ended inside an object.
    pub fn finish(self) -> Result<(), GatewayError> {
        if self.depth > 0 {
            return Err(GatewayError::MalformedJson {
                message_type: self.rpc.request_descriptor().full_name().to_owned(),
                detail: format!(
                    "the body ended inside a JSON object ({} bytes unread)",
                    self.buffer.len()
                ),
            });
        }
        Ok(())
    }
}

fn decode_message(
    descriptor: &MessageDescriptor,
    body: &[u8],
) -> Result<DynamicMessage, GatewayError> {
    if body.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        return Ok(DynamicMessage::new(descriptor.clone()));
    }
    // Fast path: a body with only known fields, each once.
    let mut json = serde_json::Deserializer::from_slice(body);
    if let Ok(message) =
        DynamicMessage::deserialize_with_options(descriptor.clone(), &mut json, &STRICT)
        && json.end().is_ok()
    {
        return Ok(message);
    }
    // Otherwise read the JSON, drop the fields the descriptor lacks, and
    // decode what is left strictly, so that unknown fields are ignored (as
    // etcd ignores them) but unknown enum names are still refused (as etcd
    // refuses them; prost-reflect's lenient mode would drop them silently).
    // A field given twice keeps its last value, as in etcd.
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| malformed(descriptor, e))?;
    drop_unknown_fields(descriptor, &mut value);
    DynamicMessage::deserialize_with_options(descriptor.clone(), value, &STRICT)
        .map_err(|e| malformed(descriptor, e))
}

/// Removes, recursively, the members of `value` that name no field of
/// `descriptor` (by proto name or JSON name).
fn drop_unknown_fields(descriptor: &MessageDescriptor, value: &mut serde_json::Value) {
    let serde_json::Value::Object(members) = value else {
        return;
    };
    members.retain(|name, _| field_named(descriptor, name).is_some());
    for (name, member) in members.iter_mut() {
        let Some(field) = field_named(descriptor, name) else {
            continue;
        };
        let Kind::Message(nested) = field.kind() else {
            continue;
        };
        match member {
            serde_json::Value::Array(items) if field.is_list() => {
                for item in items {
                    drop_unknown_fields(&nested, item);
                }
            }
            other => drop_unknown_fields(&nested, other),
        }
    }
}

fn field_named(descriptor: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    descriptor.get_field_by_json_name(name).or_else(|| descriptor.get_field_by_name(name))
}

fn encode_message(message: &DynamicMessage) -> Vec<u8> {
    let mut json = serde_json::Serializer::new(Vec::new());
    message.serialize_with_options(&mut json, &SERIALIZE).expect(
        "etcd's messages hold no floats or well-known types, the only values prost-reflect's \
         serializer refuses",
    );
    json.into_inner()
}

fn malformed(descriptor: &MessageDescriptor, error: impl std::fmt::Display) -> GatewayError {
    GatewayError::MalformedJson {
        message_type: descriptor.full_name().to_owned(),
        detail: error.to_string(),
    }
}

fn encode_failed(descriptor: &MessageDescriptor, error: prost::DecodeError) -> GatewayError {
    GatewayError::Encode {
        message_type: descriptor.full_name().to_owned(),
        detail: error.to_string(),
    }
}
