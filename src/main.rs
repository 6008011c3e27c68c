//! The `sesame` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cli::print_json;

mod cli;

use sesame::config::{Config, InfectedAction};
use sesame::control::{Control, DkimSigner, IdentityStatus};

#[derive(Parser)]
#[command(
    name = "sesame",
    version,
    about = "A self-hosted SMTP gateway that behaves like Amazon SES"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "config/sesame.toml")]
    config: PathBuf,
    /// Overrides `data_dir` from the configuration.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM/SIGINT.
    Serve,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage sending/receiving identities (domains and addresses).
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Manage SMTP credentials.
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// Inspect the queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Manage domains: DKIM keys, DNS records, verification, MAIL FROM.
    #[command(subcommand)]
    Domain(cli::domain::DomainCommand),
    /// The per-tenant suppression list (SES account-level semantics).
    #[command(subcommand)]
    Suppression(SuppressionCommand),
    /// A tenant's receipt rules for inbound mail (SES semantics, ordered).
    #[command(subcommand)]
    Rule(cli::rule::RuleCommand),
    /// A tenant's IP address filters for inbound mail (Block/Allow CIDRs).
    #[command(subcommand)]
    IpFilter(cli::rule::IpFilterCommand),
    /// Inspect the event log (SES-shaped notifications).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Manage API keys for the tenant HTTP API.
    #[command(subcommand)]
    Apikey(cli::apikey::ApiKeyCommand),
    /// Configuration sets: outbound TLS policy and signed event webhooks.
    #[command(subcommand)]
    ConfigSet(cli::config_set::ConfigSetCommand),
    /// Health of what the gateway depends on (clamd); exits 1 when scanning
    /// is enabled and clamd is unreachable.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant (it starts in the sandbox, as on SES).
    Create { name: String },
    /// List tenants.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change a tenant's settings.
    Set {
        name: String,
        /// Leave the sandbox: send to any recipient.
        #[arg(long, conflicts_with = "sandbox")]
        production: bool,
        /// Go back into the sandbox.
        #[arg(long)]
        sandbox: bool,
        /// Strip infected attachments or reject the message (`default`:
        /// follow scan.on_infected).
        #[arg(long, value_parser = ["strip", "reject", "default"])]
        on_infected: Option<String>,
        /// How outbound mail leaves: capture (kept locally), mx, or ses
        /// (Amazon SES; needs an [aws] config section).
        #[arg(long, value_parser = ["capture", "mx", "relay", "ses"])]
        delivery: Option<String>,
        /// Refuse inbound mail that fails DMARC under the sender's p=reject
        /// (550 5.7.1); `off` stores it flagged. New tenants: on.
        #[arg(long, value_parser = ["on", "off"])]
        dmarc_enforce: Option<String>,
        /// Who DKIM-signs outbound mail: sesame, or ses (SES Easy DKIM
        /// signs; sesame does not sign it again).
        #[arg(long, value_parser = ["sesame", "ses"])]
        dkim: Option<String>,
        /// SES MaxSendRate: recipients per second (-1: unlimited).
        #[arg(long, allow_negative_numbers = true)]
        max_send_rate: Option<i64>,
        /// SES Max24HourSend: recipients per 24 hours (-1: unlimited).
        #[arg(long = "max-24h-send", allow_negative_numbers = true)]
        max_24h_send: Option<i64>,
    },
}

#[derive(Subcommand)]
enum SuppressionCommand {
    /// List a tenant's suppressed addresses.
    List {
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Suppress an address.
    Add {
        tenant: String,
        address: String,
        #[arg(long, default_value = "BOUNCE", value_parser = ["BOUNCE", "COMPLAINT"])]
        reason: String,
    },
    /// Remove an address from the list.
    Remove { tenant: String, address: String },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// List a tenant's events, oldest first.
    List {
        tenant: String,
        /// Only the events of this message id.
        #[arg(long)]
        message: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Add a domain or email address identity.
    Add {
        tenant: String,
        identity: String,
        /// Operator attests ownership: mark it verified (SUCCESS) now.
        #[arg(long)]
        verified: bool,
    },
    /// List a tenant's identities.
    List {
        tenant: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CredentialCommand {
    /// Create an SES-shaped SMTP credential and print it once.
    Create { tenant: String },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// List queued messages.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print a queued message as stored (raw RFC 5322).
    Show { message_id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,hickory_server=warn,hickory_proto=warn".into()),
        )
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sesame: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(&cli.config)?;
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    if let Command::Serve = cli.command {
        let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
        return runtime.block_on(sesame::app::serve(config));
    }
    config.validate()?;
    // Printing commands behave like Unix tools when their reader goes away
    // (`... | head`): end quietly instead of panicking on a broken pipe.
    // Not for `serve`, whose sockets must never raise SIGPIPE.
    // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let control = Control::open(&config.data_dir)?;
    if let Some(dev) = config.dev() {
        // So that the CLI sees the dev tenant before `serve` ever ran.
        sesame::app::provision_dev(&control, dev)?;
    }
    match cli.command {
        Command::Serve => unreachable!("handled above"),
        Command::Tenant(TenantCommand::Create { name }) => {
            print_json(&control.create_tenant(&name)?)
        }
        Command::Tenant(TenantCommand::List { json }) => {
            let tenants = control.tenants()?;
            if json {
                return print_json(&tenants);
            }
            for t in tenants {
                let mode = if t.sandbox { "sandbox" } else { "production" };
                println!(
                    "{}\t{mode}\t{}\t{}/s\t{}/24h",
                    t.name, t.delivery, t.send_quota.max_send_rate, t.send_quota.max_24_hour_send
                );
            }
            Ok(())
        }
        Command::Tenant(TenantCommand::Set {
            name,
            production,
            sandbox,
            on_infected,
            delivery,
            dmarc_enforce,
            dkim,
            max_send_rate,
            max_24h_send,
        }) => {
            anyhow::ensure!(
                production
                    || sandbox
                    || on_infected.is_some()
                    || delivery.is_some()
                    || dmarc_enforce.is_some()
                    || dkim.is_some()
                    || max_send_rate.is_some()
                    || max_24h_send.is_some(),
                "nothing to set: pass --production, --sandbox, --on-infected, --delivery, \
                 --dmarc-enforce, --dkim, --max-send-rate or --max-24h-send"
            );
            let mut tenant = control.require_tenant(&name)?;
            if production || sandbox {
                tenant = control.set_sandbox(&name, sandbox)?;
            }
            if let Some(action) = on_infected {
                tenant = control.set_on_infected(&name, InfectedAction::parse(&action))?;
            }
            if let Some(mode) = delivery {
                tenant = control.set_delivery(&name, &mode)?;
            }
            if let Some(enforce) = dmarc_enforce {
                tenant = control.set_dmarc_enforce(&name, enforce == "on")?;
            }
            if let Some(signer) = dkim.as_deref().and_then(DkimSigner::parse) {
                tenant = control.set_dkim_signer(&name, signer)?;
            }
            if max_send_rate.is_some() || max_24h_send.is_some() {
                control.set_send_quota(&name, max_send_rate, max_24h_send)?;
                tenant = control.require_tenant(&name)?;
            }
            print_json(&tenant)
        }
        Command::Identity(IdentityCommand::Add {
            tenant,
            identity,
            verified,
        }) => {
            if !identity.contains('@') {
                // A domain identity always comes with DKIM keys.
                sesame::domains::add(&control, &tenant, &identity, "rsa2048", verified)?;
                let name = control.require_domain(&identity)?.domain;
                let added = control
                    .identities(&tenant)?
                    .into_iter()
                    .find(|i| i.identity == name);
                return print_json(&added);
            }
            let status = if verified {
                IdentityStatus::Success
            } else {
                IdentityStatus::Pending
            };
            print_json(&control.add_identity(&tenant, &identity, status)?)
        }
        Command::Identity(IdentityCommand::List { tenant, json }) => {
            control.require_tenant(&tenant)?;
            let identities = control.identities(&tenant)?;
            if json {
                return print_json(&identities);
            }
            for i in identities {
                println!("{}\t{:?}\t{:?}", i.identity, i.kind, i.status);
            }
            Ok(())
        }
        Command::Credential(CredentialCommand::Create { tenant }) => {
            print_json(&control.create_credential(&tenant, &config.region)?)
        }
        Command::Domain(command) => cli::domain::run(command, &config, &control),
        Command::Rule(command) => cli::rule::run_rule(command, &control),
        Command::IpFilter(command) => cli::rule::run_ip_filter(command, &control),
        Command::Apikey(command) => cli::apikey::run(command, &control),
        Command::ConfigSet(command) => cli::config_set::run(command, &control),
        Command::Queue(QueueCommand::Show { message_id }) => {
            let body = sesame::queue::body(&config.data_dir, &message_id)?
                .ok_or_else(|| anyhow::anyhow!("no queued message '{message_id}'"))?;
            use std::io::Write;
            std::io::stdout().write_all(&body)?;
            Ok(())
        }
        Command::Queue(QueueCommand::List { json }) => {
            let entries = sesame::queue::list(&config.data_dir)?;
            if json {
                return print_json(&entries);
            }
            for e in entries {
                println!(
                    "{}\t{}\t{}\t{}",
                    e.message_id,
                    e.tenant,
                    e.from,
                    e.recipients.join(",")
                );
            }
            Ok(())
        }
        Command::Events(EventsCommand::List {
            tenant,
            message,
            json,
        }) => {
            control.require_tenant(&tenant)?;
            let events = control.events(&tenant, message.as_deref())?;
            if json {
                return print_json(&events);
            }
            for e in events {
                println!("{}\t{}\t{}", e.created_at, e.event_type, e.message_id);
            }
            Ok(())
        }
        Command::Suppression(SuppressionCommand::List { tenant, json }) => {
            let list = control.suppression_list(&tenant)?;
            if json {
                return print_json(&list);
            }
            for e in list {
                println!(
                    "{}\t{}\t{}\t{}",
                    e.email_address,
                    e.reason,
                    e.message_id.unwrap_or_default(),
                    e.last_update_time
                );
            }
            Ok(())
        }
        Command::Suppression(SuppressionCommand::Add {
            tenant,
            address,
            reason,
        }) => {
            anyhow::ensure!(
                sesame::types::EmailAddress::parse(&address).is_some(),
                "'{address}' is not an email address"
            );
            control.suppress(&tenant, &address, &reason, None)?;
            Ok(())
        }
        Command::Suppression(SuppressionCommand::Remove { tenant, address }) => {
            anyhow::ensure!(
                control.unsuppress(&tenant, &address)?,
                "'{address}' is not on the suppression list of '{tenant}'"
            );
            Ok(())
        }
        Command::Status { json } => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let status = runtime.block_on(sesame::scan::status(&config.scan))?;
            if json {
                print_json(&status)?;
            } else {
                println!("{status}");
            }
            anyhow::ensure!(
                !status.is_degraded(),
                "scanning is enabled but clamd at {} is unreachable",
                status.clamd.address
            );
            Ok(())
        }
    }
}
