//! Checks every service, RPC, message, field and enum value of our `.proto`
//! files against `tests/data/etcd-3.5-api.txt`, a list of etcd 3.5's API
//! facts written independently of the `.proto` files.
//!
//! The compiled descriptor set (what the generated code and the wire format
//! come from) is turned into the same line format as the fact list, and the
//! two must be equal: a wrong field number, type, name or label, a missing or
//! extra field, message, enum value, RPC or streaming flag fails with the
//! differing lines.

use std::collections::BTreeSet;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};

/// The fact list: etcd 3.5's client API.
const FACTS: &str = include_str!("data/etcd-3.5-api.txt");

/// The proto packages this crate must define, and nothing else.
const PACKAGES: [&str; 5] = ["authpb", "etcdserverpb", "mvccpb", "v3electionpb", "v3lockpb"];

/// Canonical lines from the fact file: `<block header> | <member line>` for
/// members, and the header alone for each block (so empty messages count).
fn facts() -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    let mut header: Option<&str> = None;
    for (number, line) in FACTS.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(member) = line.strip_prefix("  ") {
            let header =
                header.unwrap_or_else(|| panic!("line {}: member before any block", number + 1));
            let member = member.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                lines.insert(format!("{header} | {member}")),
                "line {}: duplicate fact {member:?}",
                number + 1
            );
        } else {
            assert!(
                ["message ", "enum ", "service "].iter().any(|kind| line.starts_with(kind)),
                "line {}: unknown block {line:?}",
                number + 1
            );
            assert!(lines.insert(line.to_owned()), "line {}: duplicate block {line:?}", number + 1);
            header = Some(line);
        }
    }
    lines
}

fn type_name(field: &FieldDescriptorProto) -> String {
    let scalar = match field.r#type() {
        Type::Message | Type::Enum => {
            return field.type_name().trim_start_matches('.').to_owned();
        }
        Type::Bytes => "bytes",
        Type::String => "string",
        Type::Bool => "bool",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Uint32 => "uint32",
        other => panic!("field {} has a type etcd's API never uses: {other:?}", field.name()),
    };
    scalar.to_owned()
}

fn add_enum(lines: &mut BTreeSet<String>, scope: &str, en: &EnumDescriptorProto) {
    let header = format!("enum {scope}.{}", en.name());
    for value in &en.value {
        lines.insert(format!("{header} | {} {}", value.number(), value.name()));
    }
    lines.insert(header);
}

fn add_message(lines: &mut BTreeSet<String>, scope: &str, message: &DescriptorProto) {
    let full = format!("{scope}.{}", message.name());
    let header = format!("message {full}");
    for field in &message.field {
        assert!(
            !field.proto3_optional(),
            "{full}.{}: etcd's API has no proto3 `optional` fields",
            field.name()
        );
        let repeated = if field.label() == Label::Repeated { "repeated " } else { "" };
        let oneof = field
            .oneof_index
            .map(|index| {
                let index = usize::try_from(index).expect("oneof index is small");
                format!(" oneof {}", message.oneof_decl[index].name())
            })
            .unwrap_or_default();
        lines.insert(format!(
            "{header} | {} {} {repeated}{}{oneof}",
            field.number(),
            field.name(),
            type_name(field)
        ));
    }
    lines.insert(header);
    for nested in &message.nested_type {
        add_message(lines, &full, nested);
    }
    for en in &message.enum_type {
        add_enum(lines, &full, en);
    }
}

/// Canonical lines from the compiled descriptor set.
fn descriptor() -> BTreeSet<String> {
    let set = FileDescriptorSet::decode(ringkv_api::FILE_DESCRIPTOR_SET)
        .expect("FILE_DESCRIPTOR_SET decodes");
    let mut lines = BTreeSet::new();
    let mut packages = BTreeSet::new();
    for file in &set.file {
        assert_eq!(file.syntax(), "proto3", "{} must be proto3", file.name());
        let package = file.package();
        packages.insert(package.to_owned());
        for message in &file.message_type {
            add_message(&mut lines, package, message);
        }
        for en in &file.enum_type {
            add_enum(&mut lines, package, en);
        }
        for service in &file.service {
            let header = format!("service {package}.{}", service.name());
            for method in &service.method {
                let stream = |yes: bool| if yes { "stream " } else { "" };
                lines.insert(format!(
                    "{header} | {} {}{} -> {}{}",
                    method.name(),
                    stream(method.client_streaming()),
                    method.input_type().trim_start_matches('.'),
                    stream(method.server_streaming()),
                    method.output_type().trim_start_matches('.'),
                ));
            }
            lines.insert(header);
        }
    }
    assert_eq!(
        packages,
        PACKAGES.iter().map(|p| (*p).to_owned()).collect::<BTreeSet<_>>(),
        "the descriptor set must hold exactly etcd's packages (imports included)"
    );
    lines
}

#[test]
fn protos_match_etcd_3_5_api_facts() {
    let expected = facts();
    let actual = descriptor();
    let missing: Vec<_> = expected.difference(&actual).collect();
    let extra: Vec<_> = actual.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "our .proto files differ from etcd 3.5's API\n\
         in the facts but not in proto/ ({}):\n  {}\n\
         in proto/ but not in the facts ({}):\n  {}",
        missing.len(),
        missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  "),
        extra.len(),
        extra.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  "),
    );
}

#[test]
fn fact_list_covers_the_whole_api() {
    // Guards the fact file itself against truncation: counts of etcd 3.5's
    // client API (8 services, 48 RPCs, 111 messages).
    let facts = facts();
    let count = |prefix: &str| facts.iter().filter(|line| line.starts_with(prefix)).count();
    let rpcs =
        facts.iter().filter(|line| line.starts_with("service ") && line.contains(" | ")).count();
    assert_eq!(count("service ") - rpcs, 8, "services");
    assert_eq!(rpcs, 48, "RPCs");
    assert_eq!(
        facts.iter().filter(|l| l.starts_with("message ") && !l.contains(" | ")).count(),
        111
    );
}
