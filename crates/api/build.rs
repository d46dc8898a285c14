//! Generates the Rust code for our `.proto` files.
//!
//! `protox` parses the files in pure Rust (no `protoc` binary, so a clean
//! clone builds with nothing but cargo) and `tonic-prost-build` turns the
//! descriptors into prost messages plus tonic clients and servers. Output goes
//! to `OUT_DIR`, one `<package>.rs` per proto package, and
//! `file_descriptor_set.bin`, exported as `ringkv_api::FILE_DESCRIPTOR_SET`.

// Build scripts talk to cargo through stdout.
#![allow(clippy::print_stdout)]

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use prost::Message as _;

/// Directory the imports inside our `.proto` files are relative to.
const PROTO_ROOT: &str = "proto";

/// Every `.proto` file, relative to [`PROTO_ROOT`]. Imports are compiled
/// too, but naming each file keeps the list of what we ship explicit.
const PROTO_FILES: [&str; 5] = [
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "v3lockpb/v3lock.proto",
    "v3electionpb/v3election.proto",
];

/// Name of the file (in `OUT_DIR`) holding the encoded descriptor set.
const DESCRIPTOR_SET_FILE: &str = "file_descriptor_set.bin";

/// Rust field names to fix in the generated code: `(package, generated,
/// wanted)`.
///
/// prost snake-cases etcd's `peerURLs` as `peer_ur_ls`. The proto field
/// names must stay etcd's (the JSON gateway prints them), so the Rust names
/// are fixed after generation. Every rename must match, so a prost change in
/// naming fails the build instead of silently leaving the old names.
const FIELD_RENAMES: [(&str, &str, &str); 2] =
    [("etcdserverpb", "peer_ur_ls", "peer_urls"), ("etcdserverpb", "client_ur_ls", "client_urls")];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("cargo did not set OUT_DIR")?);
    let fds = protox::compile(PROTO_FILES, [PROTO_ROOT])?;

    // The exported set drops source info (comments and spans): reflection
    // needs names, numbers and types only, and this keeps the constant small.
    let mut exported = fds.clone();
    for file in &mut exported.file {
        file.source_code_info = None;
    }
    fs::write(out_dir.join(DESCRIPTOR_SET_FILE), exported.encode_to_vec())?;

    // Source info stays in the set given to the generator: it turns the
    // proto comments into Rust doc comments.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .generate_default_stubs(true)
        .out_dir(&out_dir)
        .compile_fds(fds)?;

    for (package, generated, wanted) in FIELD_RENAMES {
        rename_identifier(&out_dir.join(format!("{package}.rs")), generated, wanted)?;
    }
    Ok(())
}

/// Replaces every whole-word occurrence of `from` with `to` in `path`.
///
/// # Errors
///
/// Fails if the file cannot be read or written, or if `from` does not occur.
fn rename_identifier(path: &Path, from: &str, to: &str) -> Result<(), Box<dyn Error>> {
    let source = fs::read_to_string(path)?;
    let mut renamed = String::with_capacity(source.len());
    let mut rest = source.as_str();
    let mut count = 0_usize;
    while let Some(at) = rest.find(from) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + from.len()..].chars().next();
        let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        renamed.push_str(&rest[..at]);
        if is_word(before) || is_word(after) {
            renamed.push_str(from);
        } else {
            renamed.push_str(to);
            count += 1;
        }
        rest = &rest[at + from.len()..];
    }
    renamed.push_str(rest);
    if count == 0 {
        return Err(format!(
            "expected the generated identifier `{from}` in {}; prost's field naming changed, \
             so update FIELD_RENAMES in build.rs",
            path.display()
        )
        .into());
    }
    fs::write(path, renamed)?;
    Ok(())
}
