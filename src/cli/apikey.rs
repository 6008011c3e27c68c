//! `sesame apikey ...`: keys for the tenant HTTP API.

use clap::Subcommand;

use super::print_json;
use sesame::control::Control;

#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key and print it once (only its sha256 is kept).
    Create { tenant: String },
    /// List a tenant's keys (ids and dates, never the keys).
    List {
        tenant: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: ApiKeyCommand, control: &Control) -> anyhow::Result<()> {
    match command {
        ApiKeyCommand::Create { tenant } => print_json(&control.create_api_key(&tenant)?),
        ApiKeyCommand::List { tenant, json } => {
            let keys = control.api_keys(&tenant)?;
            if json {
                return print_json(&keys);
            }
            for k in keys {
                let kind = if k.is_static { "dev" } else { "key" };
                println!("{}\t{kind}\t{}", k.id, k.created_at);
            }
            Ok(())
        }
    }
}
