//! The binary: exit codes, bad configs, check --from, signals.
