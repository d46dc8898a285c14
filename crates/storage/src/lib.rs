//! Durable storage for ringkv: the node write-ahead log, snapshots and the MVCC state machine.
//!
//! - [`disk`]: the [`Disk`] trait every file access goes through, with the
//!   real [`FsDisk`] and the simulator's [`SimDisk`].

pub mod disk;

pub use disk::{Disk, DiskFile, FsDisk, SimDisk};
