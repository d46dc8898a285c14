//! Deterministic simulator for ringkv clusters: virtual time, simulated network and disks, faults, checkers.
