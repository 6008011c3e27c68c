//! Subcommands of the `sesame` binary that need more than a line or two.

pub mod apikey;
pub mod config_set;
pub mod domain;
pub mod rule;

/// Every command's `--json` output: pretty, one document.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
