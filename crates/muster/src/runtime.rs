//! Wiring shared by the subcommands: logging, the server key, the store, the directory.

use crate::settings::Resolved;
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use muster_core::credentials::password::PasswordHasher;
use muster_core::credentials::secretbox::{KEY_LEN, SecretBox};
use muster_directory::{Directory, HashPool};
use muster_store::{Store, StoreOptions};
use std::io::Write as _;
use std::path::Path;

/// Logs go to standard error; standard output carries only what the operator must read
/// (the listen address, a one-time password).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MUSTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info"));
    // Colour only on a terminal: escape codes in files and log collectors are noise.
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The server key: from configuration, or from `<data dir>/muster.key`, generated (mode 0600)
/// on first start.
pub fn server_key(resolved: &Resolved) -> Result<SecretBox> {
    let decode = |text: &str| -> Result<[u8; KEY_LEN]> {
        let bytes = STANDARD.decode(text.trim()).context("the server key must be base64")?;
        bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("the server key must be {KEY_LEN} bytes"))
    };
    if let Some(k) = &resolved.secret_key {
        return Ok(SecretBox::new(&decode(k)?));
    }
    let path = resolved.data_dir.join("muster.key");
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(SecretBox::new(&decode(&text)?));
    }
    let key = SecretBox::generate_key();
    write_private(&path, &STANDARD.encode(key))?;
    tracing::info!(path = %path.display(), "generated a new server key");
    Ok(SecretBox::new(&key))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

pub async fn open_store(resolved: &Resolved) -> Result<Store> {
    if resolved.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&resolved.data_dir)
            .with_context(|| format!("creating {}", resolved.data_dir.display()))?;
    }
    let store = Store::connect(
        &resolved.database_url,
        &StoreOptions {
            max_connections: resolved.db_max_connections,
            sqlite_max_size_mib: resolved.sqlite_max_size_mib,
        },
    )
    .await
    .context("connecting to the database")?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

pub async fn directory(resolved: &Resolved) -> Result<Directory> {
    let store = open_store(resolved).await?;
    std::fs::create_dir_all(&resolved.data_dir).ok();
    let secrets = server_key(resolved)?;
    // Every node must hold the key the database's secrets are sealed with (TOTP keys; the
    // login throttle's and the console's keys are derived from it): a node with another one
    // stops here, saying so, instead of failing later on every sealed value.
    let recorded = store
        .record_server_key(secrets.key_id(), muster_core::clock::now())
        .await
        .context("recording the server key's id")?;
    if recorded != secrets.key_id() {
        bail!(
            "this node's server key (id {}) is not the one this database's secrets are sealed with (id {recorded}): \
             give every node sharing the database the same MUSTER_SECRET_KEY (or <data dir>/muster.key)",
            secrets.key_id()
        );
    }
    let hasher = match PasswordHasher::new(resolved.argon2) {
        Ok(h) => h,
        Err(e) => bail!("{e}"),
    };
    let hashes = HashPool::new(hasher, resolved.hash_workers);
    Ok(Directory::new(store, resolved.directory.clone(), hashes, secrets).with_mail(resolved.mail.directory_config()?))
}

/// The workflow engine over the shipped workflows, and the subscription reader.
pub async fn engine(
    resolved: &Resolved,
    directory: &Directory,
    concurrency: usize,
) -> Result<(
    muster_engine::Engine<muster_workflows::Deps>,
    muster_workflows::Subscriptions,
)> {
    let store = directory.store().clone();
    let catalogue = std::sync::Arc::new(
        muster_workflows::Catalogue::load(&store)
            .await
            .context("loading the product catalogue")?,
    );
    let config = muster_engine::EngineConfig {
        lease: std::time::Duration::from_secs(resolved.lease_secs),
        concurrency,
        retry_base: std::time::Duration::from_secs(resolved.retry_base_secs),
        retry_max_attempts: resolved.retry_max_attempts,
        ..Default::default()
    };
    let event_retention =
        (resolved.event_retention_days > 0).then(|| time::Duration::days(i64::from(resolved.event_retention_days)));
    let engine = muster_workflows::engine(
        store.clone(),
        directory.clone(),
        catalogue.clone(),
        config,
        event_retention,
    );
    Ok((engine, muster_workflows::Subscriptions::new(store, catalogue)))
}
