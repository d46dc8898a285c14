//! Linearizability checker for key-value histories (Wing-Gong search, Lowe's memoization, per-key P-compositionality).
