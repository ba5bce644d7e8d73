//! `assent companion`: what the phone app does, for demos, support and tests. It is the companion
//! SDK (companion/) with a software key, so the simulator and the phone apps share one
//! implementation of enrollment, the Device JWS and decision signing.

use anyhow::{anyhow, bail, Context};
use assent_companion::{
    enrollment_offer, Challenge, DenyReason, Device, DeviceState, EnrollRequest, PushPlatform,
    SoftwareSigner,
};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args)]
pub struct CompanionArgs {
    /// Where the device id, server and private key are kept (mode 0600).
    #[arg(long, global = true)]
    pub state: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CompanionCommand,
}

#[derive(Subcommand)]
pub enum CompanionCommand {
    /// Make a P-256 key, enroll it with a one-time code, save the state.
    Enroll {
        #[arg(long)]
        server: String,
        #[arg(long)]
        code: String,
        #[arg(long, default_value = "assent companion")]
        name: String,
    },
    /// List pending challenges.
    Pending {
        #[arg(long)]
        json: bool,
    },
    /// Approve a challenge (the newest pending one unless --challenge), matching the console's number.
    Approve {
        #[arg(long)]
        challenge: Option<String>,
        /// The number the console shows; asked for interactively when absent.
        #[arg(long)]
        number: Option<u8>,
    },
    /// Deny a challenge (the newest pending one unless --challenge).
    Deny {
        #[arg(long)]
        challenge: Option<String>,
        #[arg(long, value_parser = ["not_me", "mistake"])]
        reason: Option<String>,
    },
}

#[derive(Serialize, Deserialize)]
struct State {
    server: String,
    device_id: String,
    audience: String,
    private_key_pem: String,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("server", &self.server)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

fn default_state_path() -> anyhow::Result<PathBuf> {
    let home =
        std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set; pass --state FILE"))?;
    Ok(PathBuf::from(home).join(".config/assent/companion.json"))
}

fn save(path: &Path, state: &State) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(serde_json::to_string_pretty(state)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn load(path: &Path) -> anyhow::Result<Device> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "no companion state at {}; run `assent companion enroll` first",
            path.display()
        )
    })?;
    let state: State =
        serde_json::from_str(&text).context("the companion state file is damaged")?;
    let signer = SoftwareSigner::from_pkcs8_pem(&state.private_key_pem)
        .map_err(|_| anyhow!("the companion key is damaged"))?;
    let device = DeviceState {
        server: state.server,
        device_id: state.device_id,
        audience: state.audience,
    };
    Ok(Device::restore(device, Arc::new(signer))?)
}

/// Turns an error answer into one line (problem+json's detail when there is one).
pub(crate) async fn check(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let detail = body["detail"]
        .as_str()
        .or(body["title"].as_str())
        .unwrap_or("no detail");
    bail!("the server answered {}: {detail}", status.as_u16())
}

/// The challenge to decide: the one named, or the newest pending one.
async fn pick(device: &Device, id: Option<String>) -> anyhow::Result<Challenge> {
    let list = device.pending().await?;
    match id {
        Some(id) => list
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| anyhow!("no pending challenge {id}")),
        None => list
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no pending challenge")),
    }
}

/// One line for a pending challenge: what is asked in words (the phone shows what it signs:
/// "Add a new phone to your account" for `device.enroll`), whom it is about, and from where.
fn describe(c: &Challenge) -> String {
    let ticket = match &c.ticket {
        Some(t) => format!("  ticket {t}"),
        None => String::new(),
    };
    let member = match &c.member_email {
        Some(m) => format!("  member {m}"),
        None => String::new(),
    };
    format!(
        "{}  {} ({}){member}{ticket}  workspace {} ({})  asked by {} from {}  expires {}",
        c.id,
        c.action,
        c.description,
        c.workspace_name,
        c.workspace_slug,
        c.requested_by,
        c.ip,
        c.expires_at,
    )
}

/// Shows the three numbers and asks which one the console shows.
fn ask_number(challenge: &Challenge) -> anyhow::Result<u8> {
    let choices = &challenge.number_choices;
    eprintln!("{}", describe(challenge));
    eprint!("Which number does the console show? {choices:?}: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    line.trim()
        .parse()
        .map_err(|_| anyhow!("expected one of {choices:?}"))
}

fn status_word(status: assent_companion::DecisionStatus) -> &'static str {
    match status {
        assent_companion::DecisionStatus::Approved => "approved",
        assent_companion::DecisionStatus::AwaitingSecondApproval => {
            "approved (awaiting a second approval)"
        }
        assent_companion::DecisionStatus::Denied => "denied",
    }
}

pub async fn run(args: CompanionArgs) -> anyhow::Result<()> {
    let path = match args.state {
        Some(p) => p,
        None => default_state_path()?,
    };
    if let CompanionCommand::Enroll { server, code, name } = &args.command {
        let signer = Arc::new(SoftwareSigner::generate());
        let offer = enrollment_offer(server.clone(), code.clone())?;
        let request = EnrollRequest {
            name: name.clone(),
            platform: PushPlatform::Fcm,
            push_token: None,
        };
        let device = Device::enroll(&offer, &request, signer.clone()).await?;
        let enrolled = device.state();
        let state = State {
            server: server.clone(),
            device_id: enrolled.device_id.clone(),
            audience: enrolled.audience.clone(),
            private_key_pem: signer.to_pkcs8_pem().to_string(),
        };
        save(&path, &state)?;
        println!(
            "enrolled as {} (state in {})",
            state.device_id,
            path.display()
        );
        return Ok(());
    }
    let device = load(&path)?;
    match args.command {
        CompanionCommand::Enroll { .. } => unreachable!("handled above"),
        CompanionCommand::Pending { json } => {
            if json {
                println!("{}", device.pending_json().await?);
            } else {
                let list = device.pending().await?;
                if list.is_empty() {
                    println!("no pending challenges");
                }
                for c in list {
                    println!(
                        "{}  choices {}",
                        describe(&c),
                        serde_json::json!(c.number_choices)
                    );
                }
            }
        }
        CompanionCommand::Approve { challenge, number } => {
            let picked = pick(&device, challenge).await?;
            let number = match number {
                Some(n) => n,
                None => ask_number(&picked)?,
            };
            let status = device.approve(&picked, number).await?;
            println!("{}", status_word(status));
        }
        CompanionCommand::Deny { challenge, reason } => {
            let picked = pick(&device, challenge).await?;
            let reason = match reason.as_deref() {
                Some("not_me") => Some(DenyReason::NotMe),
                Some("mistake") => Some(DenyReason::Mistake),
                None => None,
                Some(other) => bail!("unknown reason {other}"),
            };
            let status = device.deny(&picked, reason).await?;
            println!("{}", status_word(status));
        }
    }
    Ok(())
}
