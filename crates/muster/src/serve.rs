//! `muster serve`.

use crate::runtime;
use crate::settings::Resolved;
use anyhow::{Context, Result};
use muster_server::{AppState, HttpOptions};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// How often expired sessions and lapsed throttle counters are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(300);
/// How often the offering account tallies are folded (each change appends two rows).
const TALLY_COMPACTION_INTERVAL: Duration = Duration::from_secs(30);

pub async fn run(resolved: Resolved) -> Result<()> {
    runtime::init_logging(resolved.json_logs);
    // The port first: a node that cannot listen must not create the database, the key or the
    // first super-user (whose one-time password a rerun would never show again).
    let listener = tokio::net::TcpListener::bind(resolved.listen.as_str())
        .await
        .with_context(|| format!("listening on {}", resolved.listen))?;
    let directory = runtime::directory(&resolved).await?;

    match directory
        .bootstrap_admin(&resolved.admin_username, resolved.admin_password.clone())
        .await
    {
        Ok(Some(Some(one_time))) => {
            // Shown exactly once, on standard output, never logged.
            println!(
                "muster: created super-user '{}' with one-time password: {one_time}\nmuster: it must be changed at first login (POST /api/session with new_password).",
                resolved.admin_username
            );
        }
        Ok(Some(None)) => tracing::info!(username = %resolved.admin_username, "created the initial super-user"),
        Ok(None) => {}
        Err(e) => anyhow::bail!("could not create the initial super-user: {e}"),
    }

    let metrics = muster_server::install_metrics();
    if let Some(handle) = metrics.clone() {
        // Without upkeep, histogram samples would accumulate in memory between scrapes.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let events = muster_server::events::EventHub::default();
    events.spawn_sequencer(directory.store().clone());
    events.spawn_listener(directory.store().clone());
    let (engine, subscriptions) = runtime::engine(&resolved, &directory, resolved.worker_concurrency.max(1)).await?;
    let hub = events.clone();
    engine.on_events(move || hub.wake())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut background = Vec::new();
    if resolved.worker_concurrency > 0 {
        background.push(tokio::spawn(muster_engine::worker::run(
            engine.clone(),
            stop_rx.clone(),
        )));
    }
    background.push(tokio::spawn(muster_engine::scheduler::run(
        engine.clone(),
        Duration::from_secs(resolved.scheduler_tick_secs),
        stop_rx.clone(),
    )));
    match resolved.mail.smtp()? {
        Some(smtp) => background.push(tokio::spawn(muster_mail::delivery::run(
            directory.store().clone(),
            directory.outbox().clone(),
            smtp,
            muster_mail::DeliveryOptions {
                retry_base: Duration::from_secs(resolved.mail.retry_base_secs),
                max_attempts: resolved.mail.max_attempts,
                ..Default::default()
            },
            stop_rx.clone(),
        ))),
        None => tracing::warn!(
            "no SMTP relay configured (MUSTER_SMTP_URL): mail stays in the outbox, unsent; \
             pending invitation links can be read with GET /api/users/{{id}}/invitation"
        ),
    }
    let state = AppState {
        processes: muster_workflows::Processes::new(engine),
        subscriptions,
        events,
        offerings: muster_offerings::Offerings::new(directory.store().clone()),
        directory: directory.clone(),
        trusted_proxies: Arc::new(resolved.trusted_proxies.clone()),
        metrics,
    };
    let options = HttpOptions {
        max_body_bytes: resolved.max_body_bytes,
        request_timeout: Duration::from_secs(resolved.request_timeout_secs),
    };
    let console = muster_console::router(muster_console::ConsoleOptions {
        secure_cookies: resolved.console_secure_cookies,
        admin_username: resolved.admin_username.clone(),
    });
    let app = muster_server::app(state, &options, console);

    let addr = listener.local_addr()?;
    println!("muster listening on http://{addr}");
    std::io::stdout().flush().ok();
    tracing::info!(%addr, database = %redact(&resolved.database_url), "muster serving");

    let purge = directory.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PURGE_INTERVAL);
        loop {
            tick.tick().await;
            match purge.purge_expired().await {
                Ok((s, t)) if s + t > 0 => {
                    tracing::info!(sessions = s, throttle_counters = t, "purged expired entries")
                }
                Ok(_) => {}
                // The node is stopping.
                Err(_) if purge.store().is_closed() => return,
                Err(e) => tracing::warn!(error = %e, "purge failed"),
            }
            if let Err(e) = purge.purge_expired_tokens().await
                && !purge.store().is_closed()
            {
                tracing::warn!(error = %e, "purging expired one-time links failed");
            }
            match purge.purge_unconfirmed_sign_ups().await {
                Ok(n) if n > 0 => tracing::info!(users = n, "deleted unconfirmed sign-ups"),
                Ok(_) => {}
                Err(_) if purge.store().is_closed() => return,
                Err(e) => tracing::warn!(error = %e, "purging unconfirmed sign-ups failed"),
            }
        }
    });

    // The account tallies' +1/-1 rows, folded into one per key (see the store's tallies.rs).
    let tallies = directory.store().clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TALLY_COMPACTION_INTERVAL);
        loop {
            tick.tick().await;
            match tallies.compact_offering_user_tallies().await {
                Ok(_) => {}
                Err(_) if tallies.is_closed() => return,
                Err(e) => tracing::warn!(error = %e, "compacting the account tallies failed"),
            }
        }
    });

    muster_server::serve(listener, app, shutdown()).await?;
    let _ = stop_tx.send(true);
    for task in background {
        let _ = task.await;
    }
    directory.store().close().await;
    Ok(())
}

/// The database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub(crate) async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords_in_database_urls() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite:./muster.db"), "sqlite:./muster.db");
    }
}
