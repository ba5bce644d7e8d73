//! The command line: `serve`, `workspace create`, `member add`, `devices reset`, `staff add`, `support rotate`,
//! `audit verify|export`, `keys rotate`. Configuration comes from the environment (see `config.rs`); a command's standard
//! output holds only its JSON answer (JSON lines for `audit export`).

pub mod audit;
pub mod companion;
pub mod keys;
pub mod serve;
pub mod support;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::app::App;
use crate::config::Config;
use crate::store::Role;

#[derive(Parser)]
#[command(
    name = "assent",
    version,
    about = "Step-up approval on the phone before a SCIM token is shown"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the HTTP server (console, mobile, SCIM and support APIs, health, metrics).
    Serve,
    /// Manage workspaces.
    Workspace {
        #[command(subcommand)]
        command: WorkspaceCommand,
    },
    /// Manage console users of a workspace.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Recover a person who lost every phone (local access to the deployment; audited).
    Devices {
        #[command(subcommand)]
        command: DevicesCommand,
    },
    /// Manage support staff (operators of this deployment, members of no workspace).
    Staff {
        #[command(subcommand)]
        command: support::StaffCommand,
    },
    /// Support actions on a workspace, approved on your own phone.
    Support {
        #[command(subcommand)]
        command: support::SupportCommand,
    },
    /// Act as the phone app: enroll, list pending challenges, approve or deny.
    Companion(companion::CompanionArgs),
    /// Verify or export a workspace's tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Re-encrypt the stored secrets under a new master key.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
}

#[derive(Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace, its owner and its first SCIM token; prints the owner's one-time password.
    Create {
        #[arg(long)]
        slug: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        owner_email: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    Owner,
    Admin,
    Member,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Owner => Role::Owner,
            RoleArg::Admin => Role::Admin,
            RoleArg::Member => Role::Member,
        }
    }
}

#[derive(Subcommand)]
pub enum MemberCommand {
    /// Add a console user; prints their one-time password.
    Add {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        email: String,
        #[arg(long, value_enum)]
        role: RoleArg,
    },
}

#[derive(Subcommand)]
pub enum DevicesCommand {
    /// Remove every phone of a person, for an owner who lost all of theirs and has no other owner
    /// to reset them; they enroll again after a fresh sign-in. Prints how many phones went.
    Reset {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        email: String,
    },
}

/// Runs a command; errors come back as one line for `main` to print.
pub async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Companion(args) => companion::run(args).await,
        Command::Audit { command } => audit::run(command, config).await,
        Command::Keys { command } => keys::run(command, config).await,
        Command::Serve => serve::serve(config).await,
        Command::Staff { command } => support::run_staff(command, config).await,
        Command::Support { command } => support::run_support(command, config).await,
        Command::Devices {
            command: DevicesCommand::Reset { workspace, email },
        } => {
            let app = App::open(config, Vec::new()).await?;
            let (member, removed) = app
                .operator_reset_devices(&workspace, &email)
                .await
                .map_err(|e| match e {
                    crate::error::ApiError::NotFound => {
                        anyhow::anyhow!("no person {email} in workspace {workspace}")
                    }
                    other => other.into(),
                })?;
            println!(
                "{}",
                json!({"workspace": workspace, "email": member.email, "devices_removed": removed})
            );
            Ok(())
        }
        Command::Workspace {
            command:
                WorkspaceCommand::Create {
                    slug,
                    name,
                    owner_email,
                },
        } => {
            let app = App::open(config, Vec::new()).await?;
            let (workspace, password) = app.create_workspace(&slug, &name, &owner_email).await?;
            println!(
                "{}",
                json!({"workspace": workspace.slug, "owner_email": owner_email, "password": password.expose()})
            );
            Ok(())
        }
        Command::Member {
            command:
                MemberCommand::Add {
                    workspace,
                    email,
                    role,
                },
        } => {
            let app = App::open(config, Vec::new()).await?;
            let (user, password) = app
                .add_member(&workspace, &email, role.into())
                .await
                .map_err(|e| match e {
                    crate::error::ApiError::NotFound => anyhow::anyhow!("no workspace {workspace}"),
                    other => other.into(),
                })?;
            println!(
                "{}",
                json!({"email": user.email, "password": password.expose()})
            );
            Ok(())
        }
    }
}
