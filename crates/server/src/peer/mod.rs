//! Peer transport: long-lived TCP connections between nodes carrying encoded frames.
