//! `assent serve`: open the stores, make the first workspace on an empty database, sweep expired
//! challenges, and serve HTTP (`http/serve.rs`) until SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::push::{ApnsClient, FcmClient, PushProvider};

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// Expires due challenges once a second so their waiters hear `expired` on time, takes up approved
/// rotations that a dead process left unfinished every 10 seconds, and prunes
/// expired sessions, replay-cache entries, enrollment codes and old provisioning-log entries once a
/// minute.
fn spawn_sweeper(app: Arc<App>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for second in 0u64.. {
            tick.tick().await;
            if let Err(e) = app.sweep_challenges().await {
                tracing::warn!(error = %e, "challenge sweep failed");
            }
            if second % 10 == 0 {
                if let Err(e) = app.resume_rotations().await {
                    tracing::warn!(error = %e, "taking up unfinished rotations failed");
                }
            }
            if second % 60 == 0 {
                if let Err(e) = app.store.prune(app.now()).await {
                    tracing::warn!(error = %e, "pruning expired rows failed");
                }
                app.sweep_provisioning_log().await;
            }
        }
    });
}

/// The push providers that are configured; each platform without configuration is reported once
/// and skipped (its phones find challenges by polling).
fn push_providers(config: &Config) -> anyhow::Result<Vec<Arc<dyn PushProvider>>> {
    let clock: SharedClock = Arc::new(SystemClock);
    let mut providers: Vec<Arc<dyn PushProvider>> = Vec::new();
    match &config.apns {
        Some(apns) => {
            providers.push(Arc::new(ApnsClient::new(apns.clone(), clock.clone())?));
            tracing::info!(topic = %apns.topic, "push: APNs configured");
        }
        None => tracing::info!(
            "push: APNs not configured (ASSENT_APNS_*); iPhones find challenges by polling"
        ),
    }
    match &config.fcm {
        Some(fcm) => {
            providers.push(Arc::new(FcmClient::new(fcm.clone(), clock)?));
            tracing::info!("push: FCM configured");
        }
        None => tracing::info!(
            "push: FCM not configured (ASSENT_FCM_*); Android phones find challenges by polling"
        ),
    }
    Ok(providers)
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let providers = push_providers(&config)?;
    let app = App::open(config, providers).await?;

    if let Some((workspace, email, password)) = app.ensure_first_workspace().await? {
        // Printed once, on standard output and not through the log (as Jenkins and Keycloak do).
        println!(
            "\nFirst start: created workspace {:?}.\n  Sign in at {} with workspace {}, e-mail {}, one-time password {}\n",
            workspace.name,
            app.config.public_url,
            workspace.slug,
            email,
            password.expose()
        );
    }

    spawn_sweeper(app.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("ASSENT_LISTEN: cannot listen on {listen}: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, public_url = %app.config.public_url, "listening");
    crate::http::serve::serve(listener, app.clone(), shutdown_signal()).await;
    // Provisioning log records and used device JWS ids still queued are written before the
    // process ends.
    app.provisioning.flush().await;
    app.challenges.flush().await;
    Ok(())
}
