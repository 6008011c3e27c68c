//! `sesame rule ...` (a tenant's ordered receipt rules) and
//! `sesame ip-filter ...` (its IP address filters).

use clap::Subcommand;

use super::print_json;
use sesame::control::Control;
use sesame::rules::{Cidr, FilterPolicy, IpFilter, check_name, parse_rule};

#[derive(Subcommand)]
pub enum RuleCommand {
    /// Add a rule given as JSON (see README, "Receipt rules").
    Add {
        tenant: String,
        /// The rule, e.g. '{"name":"support","recipients":["help@acme.test"],"actions":[{"type":"store"}]}'.
        #[arg(long)]
        json: String,
        /// 1-based place in the rule set (default: last).
        #[arg(long)]
        position: Option<usize>,
    },
    /// List the rules in evaluation order.
    List {
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a rule.
    Remove { tenant: String, name: String },
    /// Move a rule to a 1-based place in the rule set.
    Move {
        tenant: String,
        name: String,
        #[arg(long)]
        position: usize,
    },
}

#[derive(Subcommand)]
pub enum IpFilterCommand {
    /// Block or allow a CIDR block for the tenant's mail.
    Add {
        tenant: String,
        name: String,
        #[arg(long, value_parser = ["block", "allow", "Block", "Allow"])]
        policy: String,
        /// e.g. 192.0.2.0/24 or 2001:db8::/32; a bare address is one host.
        #[arg(long)]
        cidr: String,
    },
    List {
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    Remove {
        tenant: String,
        name: String,
    },
}

pub fn run_rule(command: RuleCommand, control: &Control) -> anyhow::Result<()> {
    match command {
        RuleCommand::Add {
            tenant,
            json,
            position,
        } => {
            let rule = parse_rule(&json).map_err(|e| anyhow::anyhow!("bad rule: {e}"))?;
            control.add_receipt_rule(&tenant, &rule, position)?;
            print_json(&rule)
        }
        RuleCommand::List { tenant, json } => {
            control.require_tenant(&tenant)?;
            let rules = control.receipt_rules(&tenant)?;
            if json {
                return print_json(&rules);
            }
            for (i, rule) in rules.iter().enumerate() {
                let recipients = if rule.recipients.is_empty() {
                    "*".to_string()
                } else {
                    rule.recipients.join(",")
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    i + 1,
                    rule.name,
                    if rule.enabled { "enabled" } else { "disabled" },
                    recipients,
                    serde_json::to_string(&rule.actions)?
                );
            }
            Ok(())
        }
        RuleCommand::Remove { tenant, name } => control.remove_receipt_rule(&tenant, &name),
        RuleCommand::Move {
            tenant,
            name,
            position,
        } => control.move_receipt_rule(&tenant, &name, position),
    }
}

pub fn run_ip_filter(command: IpFilterCommand, control: &Control) -> anyhow::Result<()> {
    match command {
        IpFilterCommand::Add {
            tenant,
            name,
            policy,
            cidr,
        } => {
            check_name(&name).map_err(|e| anyhow::anyhow!("IP filter {e}"))?;
            let filter = IpFilter {
                name,
                policy: FilterPolicy::parse(&policy)
                    .ok_or_else(|| anyhow::anyhow!("policy must be block or allow"))?,
                cidr: Cidr::parse(&cidr).map_err(|e| anyhow::anyhow!("cidr: {e}"))?,
            };
            control.add_ip_filter(&tenant, &filter)?;
            print_json(&filter)
        }
        IpFilterCommand::List { tenant, json } => {
            control.require_tenant(&tenant)?;
            let filters = control.ip_filters(&tenant)?;
            if json {
                return print_json(&filters);
            }
            for f in filters {
                println!("{}\t{:?}\t{}", f.name, f.policy, f.cidr);
            }
            Ok(())
        }
        IpFilterCommand::Remove { tenant, name } => control.remove_ip_filter(&tenant, &name),
    }
}
