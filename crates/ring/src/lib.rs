//! Consistent hashing for ringkv: keys to shards, shards to ordered replica nodes, movement plans.
