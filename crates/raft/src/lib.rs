//! The Raft consensus engine of ringkv, as a pure (sans-IO) state machine.
