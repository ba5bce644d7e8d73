//! `assent staff add` (on the database, like `member add`) and `assent support rotate`, which
//! drives the support API from a terminal: sign in, ask, wait for the phone, confirm.

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};
use std::io::BufRead;
use std::time::Duration;

use super::companion::check;
use crate::app::App;
use crate::config::Config;
use crate::domain::crypto::Secret;

#[derive(Subcommand)]
pub enum StaffCommand {
    /// Create a support staff account; prints its one-time password.
    Add {
        #[arg(long)]
        email: String,
    },
    /// Remove a staff account at once: its sessions end and its phones are unenrolled.
    Remove {
        #[arg(long)]
        email: String,
    },
    /// List the staff accounts: {"staff":[{"email"}]}.
    List,
}

#[derive(Subcommand)]
pub enum SupportCommand {
    /// Rotate a workspace's SCIM token after approval on your own phone. Signs in with
    /// ASSENT_SUPPORT_EMAIL (or --email) and ASSENT_SUPPORT_PASSWORD (or one line on standard
    /// input). Prints the rotation time as JSON; the token itself is never shown to support.
    Rotate {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        ticket: String,
        /// Why; defaults to "requested in ticket <TICKET>".
        #[arg(long)]
        reason: Option<String>,
        /// The Assent server; defaults to ASSENT_PUBLIC_URL.
        #[arg(long)]
        server: Option<String>,
        #[arg(long, env = "ASSENT_SUPPORT_EMAIL")]
        email: String,
    },
}

pub async fn run_staff(command: StaffCommand, config: Config) -> anyhow::Result<()> {
    let app = App::open(config, Vec::new()).await?;
    match command {
        StaffCommand::Add { email } => {
            let (user, password) = app.add_staff(&email).await?;
            println!(
                "{}",
                json!({"email": user.email, "password": password.expose()})
            );
        }
        StaffCommand::Remove { email } => {
            app.remove_staff(&email).await.map_err(|e| match e {
                crate::error::ApiError::NotFound => anyhow!("no staff member {email}"),
                other => other.into(),
            })?;
            println!("{}", json!({"email": email, "removed": true}));
        }
        StaffCommand::List => {
            let staff: Vec<_> = app
                .list_staff()
                .await?
                .into_iter()
                .map(|u| json!({"email": u.email}))
                .collect();
            println!("{}", json!({ "staff": staff }));
        }
    }
    Ok(())
}

fn password() -> anyhow::Result<Secret> {
    if let Ok(p) = std::env::var("ASSENT_SUPPORT_PASSWORD") {
        return Ok(Secret::new(p));
    }
    eprint!("Password: ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    if line.is_empty() {
        bail!("no password: set ASSENT_SUPPORT_PASSWORD or type it on standard input");
    }
    Ok(Secret::new(line))
}

/// The support session's cookie, as the server set it.
fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("assent_support_session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

pub async fn run_support(command: SupportCommand, config: Config) -> anyhow::Result<()> {
    let SupportCommand::Rotate {
        workspace,
        ticket,
        reason,
        server,
        email,
    } = command;
    let server = server.unwrap_or(config.public_url);
    let server = server.trim_end_matches('/');
    let reason = reason.unwrap_or_else(|| format!("requested in ticket {ticket}"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    let response = http
        .post(format!("{server}/v1/support/session"))
        .json(&json!({"email": email, "password": password()?.expose()}))
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    let cookie = session_cookie(&response);
    check(response).await?;
    let cookie = cookie.ok_or_else(|| anyhow!("the server set no support session"))?;

    let outcome = rotate(&http, server, &cookie, &workspace, &ticket, &reason).await;
    // Sign out whatever happened; the session is of no further use.
    let _ = http
        .delete(format!("{server}/v1/support/session"))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await;
    let rotated = outcome?;
    println!(
        "{}",
        json!({"workspace": workspace, "ticket": ticket, "action": rotated["action"], "rotated_at": rotated["rotated_at"]})
    );
    Ok(())
}

async fn rotate(
    http: &reqwest::Client,
    server: &str,
    cookie: &str,
    workspace: &str,
    ticket: &str,
    reason: &str,
) -> anyhow::Result<Value> {
    let asked = check(
        http.post(format!(
            "{server}/v1/support/workspaces/{workspace}/scim-token/rotate"
        ))
        .header(reqwest::header::COOKIE, cookie)
        .json(&json!({"ticket": ticket, "reason": reason}))
        .send()
        .await?,
    )
    .await?;
    let id = asked["challenge_id"]
        .as_str()
        .ok_or_else(|| anyhow!("the server sent no challenge_id"))?
        .to_owned();
    eprintln!(
        "Approve on your phone: pick {} (expires {}; {} device(s) notified)",
        asked["number"], asked["expires_at"], asked["notified_devices"]
    );
    let mut told_second = false;
    loop {
        let c = check(
            http.get(format!("{server}/v1/support/challenges/{id}"))
                .header(reqwest::header::COOKIE, cookie)
                .send()
                .await?,
        )
        .await?;
        match c["status"].as_str() {
            Some("pending") => {
                if c["awaiting"] == "second_approval" && !told_second {
                    told_second = true;
                    eprintln!(
                        "Approved; the workspace's two-person rule now waits for one of its admins"
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Some("approved") => break,
            Some(other) => bail!("the rotation was not approved: the challenge is {other}"),
            None => bail!("the server sent no status"),
        }
    }
    check(
        http.post(format!("{server}/v1/support/challenges/{id}/release"))
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await?,
    )
    .await
}
