//! `assent companion`: what the phone app does, for demos, support and tests. It signs with the
//! same `DeviceSigner` whose formats the server verifies (domain/device.rs), so the two never drift.

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

use crate::domain::device::{DecisionClaims, DeviceSigner};

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

fn load(path: &Path) -> anyhow::Result<(State, DeviceSigner)> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "no companion state at {}; run `assent companion enroll` first",
            path.display()
        )
    })?;
    let state: State =
        serde_json::from_str(&text).context("the companion state file is damaged")?;
    let signer = DeviceSigner::from_pkcs8_pem(&state.private_key_pem)
        .map_err(|_| anyhow!("the companion key is damaged"))?;
    Ok((state, signer))
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

struct Device {
    state: State,
    signer: DeviceSigner,
    http: reqwest::Client,
}

impl Device {
    fn auth(&self) -> String {
        format!(
            "Device {}",
            self.signer.sign_request(
                &self.state.device_id,
                &self.state.audience,
                OffsetDateTime::now_utc()
            )
        )
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.state.server.trim_end_matches('/'))
    }

    async fn pending(&self) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(self.url("/v1/mobile/challenges"))
            .header("authorization", self.auth())
            .send()
            .await?;
        check(response).await
    }

    /// The challenge to decide: the one named, or the newest pending one.
    async fn pick(&self, id: Option<String>) -> anyhow::Result<Value> {
        let pending = self.pending().await?;
        let list = pending["challenges"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        match id {
            Some(id) => list
                .into_iter()
                .find(|c| c["id"] == id.as_str())
                .ok_or_else(|| anyhow!("no pending challenge {id}")),
            None => list
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("no pending challenge")),
        }
    }

    async fn decide(
        &self,
        challenge: &Value,
        decision: &str,
        number: Option<u8>,
        reason: Option<String>,
    ) -> anyhow::Result<Value> {
        let iat = OffsetDateTime::now_utc().unix_timestamp();
        let text = |key: &str| challenge[key].as_str().unwrap_or_default().to_owned();
        // A support rotation signs what the phone shows about it: the workspace and the ticket.
        let support = challenge["action"] == "scim_token.support_rotate";
        let shown = |v: &Value| support.then(|| v.as_str().unwrap_or_default().to_owned());
        let claims = DecisionClaims {
            iss: self.state.device_id.clone(),
            aud: self.state.audience.clone(),
            sub: text("id"),
            nonce: text("nonce"),
            action: text("action"),
            decision: decision.to_owned(),
            number,
            reason,
            workspace: shown(&challenge["workspace"]["slug"]),
            ticket: shown(&challenge["context"]["ticket"]),
            iat,
            exp: iat + 60,
        };
        let jws = self.signer.sign_decision(&self.state.device_id, &claims);
        let response = self
            .http
            .post(self.url(&format!("/v1/mobile/challenges/{}/decision", claims.sub)))
            .header("authorization", self.auth())
            .json(&json!({ "decision": jws }))
            .send()
            .await?;
        check(response).await
    }
}

/// One line for a pending challenge: what is asked in words (the phone shows what it signs:
/// "Add a new phone to your account" for `device.enroll`), whom it is about, and from where.
fn describe(c: &Value) -> String {
    let ticket = match c["context"]["ticket"].as_str() {
        Some(t) => format!("  ticket {t}"),
        None => String::new(),
    };
    let member = match c["context"]["member"]["email"].as_str() {
        Some(m) => format!("  member {m}"),
        None => String::new(),
    };
    let words = match c["context"]["description"].as_str() {
        Some(d) => format!(" ({d})"),
        None => String::new(),
    };
    format!(
        "{}  {}{words}{member}{ticket}  workspace {} ({})  asked by {} from {}  expires {}",
        c["id"].as_str().unwrap_or_default(),
        c["action"].as_str().unwrap_or_default(),
        c["workspace"]["name"].as_str().unwrap_or_default(),
        c["workspace"]["slug"].as_str().unwrap_or_default(),
        c["requested_by"]["email"].as_str().unwrap_or_default(),
        c["context"]["ip"].as_str().unwrap_or_default(),
        c["expires_at"].as_str().unwrap_or_default(),
    )
}

/// Shows the three numbers and asks which one the console shows.
fn ask_number(challenge: &Value) -> anyhow::Result<u8> {
    let choices: Vec<u64> = challenge["number_choices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    eprintln!("{}", describe(challenge));
    eprint!("Which number does the console show? {choices:?}: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    line.trim()
        .parse()
        .map_err(|_| anyhow!("expected one of {choices:?}"))
}

pub async fn run(args: CompanionArgs) -> anyhow::Result<()> {
    let path = match args.state {
        Some(p) => p,
        None => default_state_path()?,
    };
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    if let CompanionCommand::Enroll { server, code, name } = &args.command {
        let signer = DeviceSigner::generate();
        let response = http
            .post(format!("{}/v1/mobile/devices", server.trim_end_matches('/')))
            .json(&json!({"enrollment_code": code, "name": name, "platform": "fcm", "public_key": signer.public_key().to_jwk()}))
            .send()
            .await?;
        let answer = check(response).await?;
        let state = State {
            server: server.clone(),
            device_id: answer["device_id"]
                .as_str()
                .ok_or_else(|| anyhow!("the server sent no device_id"))?
                .to_owned(),
            audience: answer["audience"]
                .as_str()
                .ok_or_else(|| anyhow!("the server sent no audience"))?
                .to_owned(),
            private_key_pem: signer.to_pkcs8_pem().expose().to_owned(),
        };
        save(&path, &state)?;
        println!(
            "enrolled as {} (state in {})",
            state.device_id,
            path.display()
        );
        return Ok(());
    }
    let (state, signer) = load(&path)?;
    let device = Device {
        state,
        signer,
        http,
    };
    match args.command {
        CompanionCommand::Enroll { .. } => unreachable!("handled above"),
        CompanionCommand::Pending { json } => {
            let pending = device.pending().await?;
            if json {
                println!("{pending}");
            } else {
                let list = pending["challenges"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if list.is_empty() {
                    println!("no pending challenges");
                }
                for c in list {
                    println!("{}  choices {}", describe(&c), c["number_choices"]);
                }
            }
        }
        CompanionCommand::Approve { challenge, number } => {
            let picked = device.pick(challenge).await?;
            let number = match number {
                Some(n) => n,
                None => ask_number(&picked)?,
            };
            let answer = device
                .decide(&picked, "approve", Some(number), None)
                .await?;
            println!("{}", answer["status"].as_str().unwrap_or("done"));
        }
        CompanionCommand::Deny { challenge, reason } => {
            let picked = device.pick(challenge).await?;
            let answer = device.decide(&picked, "deny", None, reason).await?;
            println!("{}", answer["status"].as_str().unwrap_or("done"));
        }
    }
    Ok(())
}
