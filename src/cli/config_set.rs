//! `sesame config-set create|list`: configuration sets with their TLS
//! policy and webhook event destinations.

use clap::Subcommand;
use sesame::control::{Control, TlsPolicy, parse_event_types};

use super::print_json;

#[derive(Subcommand)]
pub enum ConfigSetCommand {
    /// Create a configuration set; prints the webhook's signing secret once.
    Create {
        tenant: String,
        name: String,
        /// `require`: outbound mail never crosses a plaintext hop.
        #[arg(long, default_value = "optional")]
        tls_policy: String,
        /// Event destination: SES-shaped events are POSTed here, signed.
        #[arg(long, requires = "events")]
        webhook: Option<String>,
        /// Comma-separated: send, delivery, bounce, complaint,
        /// deliverydelay, reject.
        #[arg(long, requires = "webhook")]
        events: Option<String>,
    },
    /// List a tenant's configuration sets (secrets are never shown again).
    List {
        tenant: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: ConfigSetCommand, control: &Control) -> anyhow::Result<()> {
    match command {
        ConfigSetCommand::Create {
            tenant,
            name,
            tls_policy,
            webhook,
            events,
        } => {
            let policy = TlsPolicy::parse(&tls_policy).ok_or_else(|| {
                anyhow::anyhow!("--tls-policy must be require or optional, not '{tls_policy}'")
            })?;
            let destination = match (&webhook, &events) {
                (Some(url), Some(list)) => Some((url.as_str(), parse_event_types(list)?)),
                _ => None,
            };
            let created = control.create_config_set(&tenant, &name, policy, destination)?;
            if !created.event_destinations.is_empty() {
                eprintln!("sesame: keep the webhook secret now; it is not shown again");
            }
            print_json(&created)
        }
        ConfigSetCommand::List { tenant, json } => {
            let sets = control.config_sets(&tenant)?;
            if json {
                return print_json(&sets);
            }
            for set in sets {
                let hooks: Vec<String> = set
                    .event_destinations
                    .iter()
                    .map(|d| format!("{} [{}]", d.url, d.events.join(",")))
                    .collect();
                println!(
                    "{}\t{}\t{}",
                    set.name,
                    serde_json::to_value(set.tls_policy)?
                        .as_str()
                        .unwrap_or_default(),
                    hooks.join(" ")
                );
            }
            Ok(())
        }
    }
}
