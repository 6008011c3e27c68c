//! `sesame domain ...`: add, publish, verify and rotate domains.

use clap::{Subcommand, ValueEnum};

use super::print_json;
use sesame::config::Config;
use sesame::control::{Control, Domain, MailFromBehavior};
use sesame::dns::{DnsResolver, records, zone};
use sesame::domains::{self, verify};

#[derive(Subcommand)]
pub enum DomainCommand {
    /// Add a domain identity and generate its DKIM keys.
    Add {
        tenant: String,
        domain: String,
        /// rsa2048, rsa1024, ed25519 or rsa2048+ed25519.
        #[arg(long, default_value = "rsa2048")]
        dkim: String,
        /// Operator attests ownership: verified now, never checked in DNS.
        #[arg(long)]
        verified: bool,
    },
    /// List domains with their statuses.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The records to publish (zone format loads into any DNS server).
    Records {
        domain: String,
        #[arg(long, value_enum, default_value_t = Format::Zone)]
        format: Format,
    },
    /// Check the records in DNS now and update the statuses.
    Verify {
        domain: String,
        #[arg(long)]
        json: bool,
    },
    /// Statuses and DKIM keys.
    Status {
        domain: String,
        #[arg(long)]
        json: bool,
    },
    /// Publish new DKIM keys; signing switches once they verify.
    RotateDkim { domain: String },
    /// What to do when the MAIL FROM domain is not verified.
    SetMailFrom {
        domain: String,
        /// USE_DEFAULT_VALUE or REJECT_MESSAGE.
        #[arg(long)]
        behavior: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Zone,
    Json,
}

pub fn run(command: DomainCommand, config: &Config, control: &Control) -> anyhow::Result<()> {
    match command {
        DomainCommand::Add {
            tenant,
            domain,
            dkim,
            verified,
        } => {
            let domain = domains::add(control, &tenant, &domain, &dkim, verified)?;
            print_json(&domain)
        }
        DomainCommand::List { json } => {
            let all: Vec<Domain> = control
                .domain_names()?
                .iter()
                .filter_map(|name| control.domain(name).ok().flatten())
                .collect();
            if json {
                return print_json(&all);
            }
            for d in all {
                println!(
                    "{}\t{}\tverification={}\tdkim={}\tmail_from={}",
                    d.domain,
                    d.tenant,
                    d.verification.status.as_str(),
                    d.dkim.status.as_str(),
                    d.mail_from.status.as_str()
                );
            }
            Ok(())
        }
        DomainCommand::Records { domain, format } => {
            let domain = control.require_domain(&domain)?;
            match format {
                Format::Zone => print!("{}", zone::render(&domain, config)),
                Format::Json => print_json(&records::for_domain(&domain, config))?,
            }
            Ok(())
        }
        DomainCommand::Verify { domain, json } => {
            let domain = control.require_domain(&domain)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(async {
                let resolver = DnsResolver::new(&config.dns.nameservers)?;
                verify::verify(control, config, &resolver, &domain).await
            })?;
            if json {
                return print_json(&report);
            }
            for check in &report.records {
                let mark = if check.ok { "ok     " } else { "MISSING" };
                println!(
                    "{mark} {} {} ({:?})",
                    check.record.name, check.record.rtype, check.record.purpose
                );
                println!("        expected: {}", check.record.value);
                match (&check.error, check.found.is_empty()) {
                    (Some(e), _) => println!("        DNS error: {e}"),
                    (None, true) => println!("        found:    nothing"),
                    (None, false) => check
                        .found
                        .iter()
                        .for_each(|f| println!("        found:    {f}")),
                }
            }
            for step in &report.rotation {
                println!("rotation: {step}");
            }
            println!(
                "verification={} dkim={} mail_from={}",
                report.verification.status.as_str(),
                report.dkim.status.as_str(),
                report.mail_from.status.as_str()
            );
            Ok(())
        }
        DomainCommand::Status { domain, json } => {
            let domain = control.require_domain(&domain)?;
            if json {
                return print_json(&domain);
            }
            println!("{} (tenant {})", domain.domain, domain.tenant);
            println!("  verification: {}", domain.verification.status.as_str());
            println!("  dkim:         {}", domain.dkim.status.as_str());
            println!(
                "  mail_from:    {} ({})",
                domain.mail_from.status.as_str(),
                domain.mail_from_domain
            );
            for key in &domain.keys {
                println!(
                    "  key {} {} {}",
                    key.selector,
                    key.key_type.as_str(),
                    key.state.as_str()
                );
            }
            Ok(())
        }
        DomainCommand::RotateDkim { domain } => print_json(&domains::rotate(control, &domain)?),
        DomainCommand::SetMailFrom { domain, behavior } => {
            let behavior = MailFromBehavior::parse(&behavior).ok_or_else(|| {
                anyhow::anyhow!("--behavior must be USE_DEFAULT_VALUE or REJECT_MESSAGE")
            })?;
            let name = control.require_domain(&domain)?.domain;
            control.set_mail_from_behavior(&name, behavior)?;
            print_json(&control.require_domain(&name)?)
        }
    }
}
