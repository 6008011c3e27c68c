//! Subcommands of the `sesame` binary that need more than a line or two.

pub mod domain;
