//! The `sesame` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;

use sesame::config::Config;
use sesame::control::{Control, IdentityStatus};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
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
                println!("{}\t{mode}\t{}", t.name, t.delivery);
            }
            Ok(())
        }
        Command::Tenant(TenantCommand::Set {
            name,
            production,
            sandbox,
        }) => {
            anyhow::ensure!(
                production || sandbox,
                "nothing to set: pass --production or --sandbox"
            );
            print_json(&control.set_sandbox(&name, sandbox)?)
        }
        Command::Identity(IdentityCommand::Add {
            tenant,
            identity,
            verified,
        }) => {
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
    }
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
