//! The contract every ringkv consensus engine implements: Replica, Ready, shared types and their wire codec.
