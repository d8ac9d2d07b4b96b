//! Configuration: command-line flags, then `MUSTER_*` environment variables, then an optional
//! TOML file (`--config`), then built-in defaults, in that order of precedence.
//!
//! One struct serves as both the clap arguments and the TOML schema, so a setting can never
//! exist in one place and be missing from the other. Every field is optional here; `resolve`
//! fills in the defaults.

use anyhow::{Context, Result, bail};
use clap::Args;
use muster_core::credentials::password::Argon2Params;
use muster_core::directory::DirectoryConfig;
use muster_core::directory::policy::{DEFAULT_REJECT_LIST, PasswordPolicy};
use muster_core::directory::throttle::{LoginThrottle, MAX_ACCOUNT_FAILURES};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Clone, Default, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// TOML file with any of these settings (keys as the long flag names, with underscores).
    #[arg(long, env = "MUSTER_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:8080]. Port 0 picks a free port.
    #[arg(long, env = "MUSTER_LISTEN", help_heading = "Server")]
    pub listen: Option<String>,
    /// Largest request body accepted, in bytes [default: 65536].
    #[arg(long, env = "MUSTER_MAX_BODY_BYTES", help_heading = "Server")]
    pub max_body_bytes: Option<usize>,
    /// Requests taking longer are answered 408 [default: 30].
    #[arg(long, env = "MUSTER_REQUEST_TIMEOUT_SECS", help_heading = "Server")]
    pub request_timeout_secs: Option<u64>,
    /// Processes this node's worker runs at once; 0 runs no worker in `serve` [default: 16].
    #[arg(long, env = "MUSTER_WORKER_CONCURRENCY", help_heading = "Engine")]
    pub worker_concurrency: Option<usize>,
    /// Seconds a worker's claim on a process lasts without a heartbeat; a crashed worker's
    /// processes are taken over after this [default: 30].
    #[arg(long, env = "MUSTER_LEASE_SECS", help_heading = "Engine")]
    pub lease_secs: Option<u64>,
    /// Seconds before the first retry of a failed retry step; doubles per retry [default: 5].
    #[arg(long, env = "MUSTER_RETRY_BASE_SECS", help_heading = "Engine")]
    pub retry_base_secs: Option<u64>,
    /// Runs of a retry step before its process gives up and fails (resume tries again); 0
    /// retries for ever [default: 20, about 10 hours at the default back-off].
    #[arg(long, env = "MUSTER_RETRY_MAX_ATTEMPTS", help_heading = "Engine")]
    pub retry_max_attempts: Option<u32>,
    /// Days events are kept on the event stream before the daily clean-up deletes them (a
    /// follower further behind is told with 410); 0 keeps them for ever [default: 30].
    #[arg(long, env = "MUSTER_EVENT_RETENTION_DAYS", help_heading = "Engine")]
    pub event_retention_days: Option<u32>,
    /// Seconds between scheduler ticks [default: 10].
    #[arg(long, env = "MUSTER_SCHEDULER_TICK_SECS", help_heading = "Engine")]
    pub scheduler_tick_secs: Option<u64>,
    /// Proxies whose X-Forwarded-For is believed (comma-separated IPs) [default: none].
    #[arg(long, env = "MUSTER_TRUSTED_PROXIES", value_delimiter = ',', help_heading = "Server")]
    pub trusted_proxies: Option<Vec<IpAddr>>,
    /// Mark the console's cookies `Secure` even when no trusted proxy says the request came
    /// over https (set this behind a TLS proxy that sends no `X-Forwarded-Proto`) [default: false].
    #[arg(long, env = "MUSTER_CONSOLE_SECURE_COOKIES", help_heading = "Server")]
    pub console_secure_cookies: Option<bool>,
    /// Log format: `text` or `json` [default: text]. Levels come from MUSTER_LOG (e.g. `info`).
    #[arg(long, env = "MUSTER_LOG_FORMAT", help_heading = "Server")]
    pub log_format: Option<String>,

    /// Database: `sqlite:PATH` or `postgres://…` [default: sqlite:<data dir>/muster.db].
    #[arg(long, env = "MUSTER_DATABASE_URL", help_heading = "Storage")]
    pub database_url: Option<String>,
    /// Connections to PostgreSQL, or SQLite readers [default: twice the number of cores]. More
    /// connections than cores only add contention: the database is on the same few CPUs.
    #[arg(long, env = "MUSTER_DB_MAX_CONNECTIONS", help_heading = "Storage")]
    pub db_max_connections: Option<u32>,
    /// SQLite: the largest the database file may grow, in MiB. Writes that would need more are
    /// refused with 507 `storage_full`, as on a full disk, while reads go on [default: no limit].
    #[arg(long, env = "MUSTER_SQLITE_MAX_SIZE_MIB", help_heading = "Storage")]
    pub sqlite_max_size_mib: Option<u64>,
    /// Directory for the SQLite database and the generated server key [default: .].
    #[arg(long, env = "MUSTER_DATA_DIR", help_heading = "Storage")]
    pub data_dir: Option<PathBuf>,
    /// Server key for encrypting secrets at rest (32 bytes, base64). When unset, it is read
    /// from <data dir>/muster.key, which is generated on first start. Every node sharing a
    /// database needs the same key.
    #[arg(long, env = "MUSTER_SECRET_KEY", hide_env_values = true, help_heading = "Storage")]
    pub secret_key: Option<String>,

    /// Name of the super-user created on first start with an empty database [default: admin].
    #[arg(long, env = "MUSTER_ADMIN_USERNAME", help_heading = "Bootstrap")]
    pub admin_username: Option<String>,
    /// Password for that super-user. When unset, a one-time password is printed once and must
    /// be changed at first login.
    #[arg(
        long,
        env = "MUSTER_ADMIN_PASSWORD",
        hide_env_values = true,
        help_heading = "Bootstrap"
    )]
    #[serde(skip)]
    pub admin_password: Option<String>,

    /// New users need a super-user's approval before they can log in [default: false].
    #[arg(long, env = "MUSTER_APPROVAL_REQUIRED", help_heading = "Directory")]
    pub approval_required: Option<bool>,
    /// Applications a login may name as current_app (comma-separated; the first is the default)
    /// [default: muster].
    #[arg(long, env = "MUSTER_APPS", value_delimiter = ',', help_heading = "Directory")]
    pub apps: Option<Vec<String>>,
    /// Label given to TOTP keys when none is supplied [default: muster].
    #[arg(long, env = "MUSTER_TOTP_LABEL", help_heading = "Directory")]
    pub totp_label: Option<String>,
    /// Shortest password accepted, in characters [default: 8].
    #[arg(long, env = "MUSTER_PASSWORD_MIN_LENGTH", help_heading = "Passwords")]
    pub password_min_length: Option<usize>,
    /// Longest password accepted, in characters [default: 256].
    #[arg(long, env = "MUSTER_PASSWORD_MAX_LENGTH", help_heading = "Passwords")]
    pub password_max_length: Option<usize>,
    /// Substrings no password may contain (comma-separated, case-insensitive)
    /// [default: a list of the most common passwords].
    #[arg(
        long,
        env = "MUSTER_PASSWORD_REJECT_LIST",
        value_delimiter = ',',
        help_heading = "Passwords"
    )]
    pub password_reject_list: Option<Vec<String>>,
    /// Days until a password expires [default: 730].
    #[arg(long, env = "MUSTER_PASSWORD_EXPIRY_DAYS", help_heading = "Passwords")]
    pub password_expiry_days: Option<i64>,
    /// Logins this many days before expiry carry warning W003005 [default: 30].
    #[arg(long, env = "MUSTER_PASSWORD_WARN_DAYS", help_heading = "Passwords")]
    pub password_warn_days: Option<i64>,
    /// argon2id memory per hash, KiB [default: 19456 (OWASP)].
    #[arg(long, env = "MUSTER_ARGON2_MEMORY_KIB", help_heading = "Passwords")]
    pub argon2_memory_kib: Option<u32>,
    /// argon2id passes [default: 2].
    #[arg(long, env = "MUSTER_ARGON2_ITERATIONS", help_heading = "Passwords")]
    pub argon2_iterations: Option<u32>,
    /// argon2id lanes [default: 1].
    #[arg(long, env = "MUSTER_ARGON2_PARALLELISM", help_heading = "Passwords")]
    pub argon2_parallelism: Option<u32>,
    /// Password hashes computed at once [default: number of cores].
    #[arg(long, env = "MUSTER_HASH_WORKERS", help_heading = "Passwords")]
    pub hash_workers: Option<usize>,

    /// SMTP relay for outgoing mail: `smtp://host:25`, `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS), `smtps://user:pass@host:465` (TLS). Unset: mail is kept in the outbox,
    /// unsent [default: none].
    #[arg(long, env = "MUSTER_SMTP_URL", hide_env_values = true, help_heading = "Mail")]
    pub smtp_url: Option<String>,
    /// The sender of every mail (`muster@example.org` or `Muster <muster@example.org>`)
    /// [default: muster@localhost].
    #[arg(long, env = "MUSTER_MAIL_FROM", help_heading = "Mail")]
    pub mail_from: Option<String>,
    /// The base of every link in a mail, as people reach this server (`https://id.example.org`)
    /// [default: http://<listen>].
    #[arg(long, env = "MUSTER_PUBLIC_URL", help_heading = "Mail")]
    pub public_url: Option<String>,
    /// Directory of mail templates replacing the built-in ones (`<kind>.txt`, `<kind>.html`)
    /// [default: none].
    #[arg(long, env = "MUSTER_MAIL_TEMPLATES_DIR", help_heading = "Mail")]
    pub mail_templates_dir: Option<PathBuf>,
    /// Seconds before the first retry of a failed delivery; doubles per attempt, at most an
    /// hour [default: 30].
    #[arg(long, env = "MUSTER_MAIL_RETRY_BASE_SECS", help_heading = "Mail")]
    pub mail_retry_base_secs: Option<u64>,
    /// Delivery attempts before a mail is marked failed (retry it with POST
    /// /api/mail/{id}/retry) [default: 10].
    #[arg(long, env = "MUSTER_MAIL_MAX_ATTEMPTS", help_heading = "Mail")]
    pub mail_max_attempts: Option<u32>,
    /// Minutes a password-reset link works [default: 30].
    #[arg(long, env = "MUSTER_PASSWORD_RESET_MINUTES", help_heading = "Mail")]
    pub password_reset_minutes: Option<i64>,
    /// Password-reset requests naming one account (or address) per hour before no more mail
    /// goes out for it [default: 3].
    #[arg(long, env = "MUSTER_PASSWORD_RESET_PER_ACCOUNT", help_heading = "Mail")]
    pub password_reset_per_account: Option<u32>,
    /// Password-reset requests from one client address per hour before it is refused (429)
    /// [default: 20].
    #[arg(long, env = "MUSTER_PASSWORD_RESET_PER_ADDRESS", help_heading = "Mail")]
    pub password_reset_per_address: Option<u32>,
    /// Days an invitation link works [default: 7].
    #[arg(long, env = "MUSTER_INVITATION_DAYS", help_heading = "Mail")]
    pub invitation_days: Option<i64>,
    /// Whether people may sign up by themselves: `off`, `open` (a confirmed account can log
    /// in) or `approval` (it then waits for a super-user) [default: off].
    #[arg(long, env = "MUSTER_SIGNUP", help_heading = "Sign-up")]
    pub signup: Option<String>,
    /// Hours a sign-up's confirmation link works [default: 48].
    #[arg(long, env = "MUSTER_SIGNUP_CONFIRM_HOURS", help_heading = "Sign-up")]
    pub signup_confirm_hours: Option<i64>,
    /// Days after which an unconfirmed sign-up is deleted [default: 7].
    #[arg(long, env = "MUSTER_SIGNUP_UNCONFIRMED_DAYS", help_heading = "Sign-up")]
    pub signup_unconfirmed_days: Option<i64>,
    /// Mail domains sign-ups may use (comma-separated, e.g. `example.org,example.com`)
    /// [default: any].
    #[arg(
        long,
        env = "MUSTER_SIGNUP_EMAIL_DOMAINS",
        value_delimiter = ',',
        help_heading = "Sign-up"
    )]
    pub signup_email_domains: Option<Vec<String>>,

    /// A session ends after this many seconds without use [default: 1800].
    #[arg(long, env = "MUSTER_SESSION_IDLE_SECS", help_heading = "Sessions")]
    pub session_idle_secs: Option<i64>,
    /// A session ends this many seconds after login, however used [default: 43200].
    #[arg(long, env = "MUSTER_SESSION_ABSOLUTE_SECS", help_heading = "Sessions")]
    pub session_absolute_secs: Option<i64>,
    /// Failed logins per account name from one client address before that address is slowed
    /// for that name [default: 5].
    #[arg(long, env = "MUSTER_LOGIN_FAILURES_PER_ACCOUNT_ADDRESS", help_heading = "Sessions")]
    pub login_failures_per_account_address: Option<u32>,
    /// Consecutive failed logins per account name, from anywhere, before the name is slowed
    /// from addresses it never logged in from; at most 100 [default: 100].
    #[arg(long, env = "MUSTER_LOGIN_FAILURES_PER_ACCOUNT", help_heading = "Sessions")]
    pub login_failures_per_account: Option<u32>,
    /// Distinct account names failing from one client address within an hour before it is
    /// slowed for further new names [default: 50].
    #[arg(long, env = "MUSTER_LOGIN_ACCOUNTS_PER_ADDRESS", help_heading = "Sessions")]
    pub login_accounts_per_address: Option<u32>,
    /// Days a successful login makes its address known to the account (exempt from the
    /// account's and the address's limits) [default: 90].
    #[arg(long, env = "MUSTER_LOGIN_KNOWN_ADDRESS_DAYS", help_heading = "Sessions")]
    pub login_known_address_days: Option<i64>,
    /// Longest wait throttling imposes, in seconds [default: 900].
    #[arg(long, env = "MUSTER_LOGIN_MAX_DELAY_SECS", help_heading = "Sessions")]
    pub login_max_delay_secs: Option<i64>,
}

impl std::fmt::Debug for Settings {
    /// Only whether the secrets are set; the rest is not interesting enough to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use muster_core::redact::Redacted as _;
        f.debug_struct("Settings")
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field("database_url", &self.database_url.redacted())
            .field("secret_key", &self.secret_key.redacted())
            .field("admin_password", &self.admin_password.redacted())
            .field("smtp_url", &self.smtp_url.redacted())
            .finish_non_exhaustive()
    }
}

/// `host:port` with a port, the host an address or a name (`localhost:8080`, `[::1]:8080`).
fn checked_listen(listen: &str) -> Result<String> {
    if listen.parse::<SocketAddr>().is_ok() {
        return Ok(listen.to_owned());
    }
    match listen.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(listen.to_owned()),
        _ => bail!("listen must be host:port (e.g. 127.0.0.1:8080 or localhost:8080), not {listen:?}"),
    }
}

/// The settings each subcommand reads, by clap id (the field name), in groups. `serve` reads
/// them all; the other subcommands list only theirs in `--help` ([`shown_only`]). The rest
/// stay accepted, hidden, so one environment or config file serves every subcommand.
pub mod used_by {
    /// Every subcommand: where settings come from and how it logs.
    pub const COMMON: &[&str] = &["config", "log_format"];
    /// Opening the database.
    pub const STORAGE: &[&str] = &["database_url", "db_max_connections", "sqlite_max_size_mib", "data_dir"];
    /// The directory: the server key, password hashing and rules, and the mail it queues.
    pub const DIRECTORY: &[&str] = &[
        "secret_key",
        "approval_required",
        "apps",
        "totp_label",
        "password_min_length",
        "password_max_length",
        "password_reject_list",
        "password_expiry_days",
        "password_warn_days",
        "argon2_memory_kib",
        "argon2_iterations",
        "argon2_parallelism",
        "hash_workers",
        "mail_from",
        "public_url",
        "mail_templates_dir",
        "password_reset_minutes",
        "password_reset_per_account",
        "password_reset_per_address",
        "invitation_days",
        "signup",
        "signup_confirm_hours",
        "signup_unconfirmed_days",
        "signup_email_domains",
    ];
    /// The workflow engine and its scheduler.
    pub const ENGINE: &[&str] = &[
        "worker_concurrency",
        "lease_secs",
        "retry_base_secs",
        "retry_max_attempts",
        "event_retention_days",
        "scheduler_tick_secs",
    ];
    /// Sending mail straight through the relay (`muster mail test`).
    pub const SMTP: &[&str] = &["smtp_url", "mail_from", "public_url", "mail_templates_dir"];
}

/// For clap's `mut_args`: hides from `--help` every setting not in one of `groups`. Hidden
/// settings are still parsed (flag, environment, file) exactly as before.
pub fn shown_only(groups: &'static [&'static [&'static str]]) -> impl FnMut(clap::Arg) -> clap::Arg {
    move |arg| {
        let id = arg.get_id().as_str();
        if groups.iter().any(|g| g.contains(&id)) {
            arg
        } else {
            arg.hide(true)
        }
    }
}

/// A hundred years: anything longer is "for ever", which 0 says.
const MAX_EVENT_RETENTION_DAYS: u32 = 36_500;

/// Settings with every default applied and every value checked.
#[derive(Clone)]
pub struct Resolved {
    /// `host:port`; the host may be a name (`localhost`).
    pub listen: String,
    pub max_body_bytes: usize,
    pub request_timeout_secs: u64,
    pub worker_concurrency: usize,
    pub lease_secs: u64,
    pub retry_base_secs: u64,
    pub retry_max_attempts: u32,
    pub event_retention_days: u32,
    pub scheduler_tick_secs: u64,
    pub trusted_proxies: Vec<IpAddr>,
    pub console_secure_cookies: bool,
    pub json_logs: bool,
    pub database_url: String,
    pub db_max_connections: u32,
    pub sqlite_max_size_mib: Option<u64>,
    pub data_dir: PathBuf,
    pub secret_key: Option<String>,
    pub admin_username: String,
    pub admin_password: Option<String>,
    pub argon2: Argon2Params,
    pub hash_workers: usize,
    pub directory: DirectoryConfig,
    pub mail: MailSettings,
}

/// Mail settings, checked.
#[derive(Clone)]
pub struct MailSettings {
    pub smtp_url: Option<String>,
    pub from: String,
    pub public_url: String,
    pub templates_dir: Option<PathBuf>,
    pub retry_base_secs: u64,
    pub max_attempts: u32,
    pub reset_minutes: i64,
    pub reset_per_account: u32,
    pub reset_per_address: u32,
    pub invitation_days: i64,
    pub signup: muster_directory::SignupMode,
    pub signup_confirm_hours: i64,
    pub signup_unconfirmed_days: i64,
    pub signup_domains: Vec<String>,
}

impl MailSettings {
    /// The directory's view of these settings (templates loaded and checked).
    pub fn directory_config(&self) -> Result<muster_directory::MailConfig> {
        Ok(muster_directory::MailConfig {
            public_url: self.public_url.clone(),
            templates: muster_mail::Templates::load(self.templates_dir.as_deref())?,
            reset_ttl: time::Duration::minutes(self.reset_minutes),
            invitation_ttl: time::Duration::days(self.invitation_days),
            reset_per_account: self.reset_per_account,
            reset_per_address: self.reset_per_address,
            signup: self.signup,
            signup_confirm_ttl: time::Duration::hours(self.signup_confirm_hours),
            signup_unconfirmed_ttl: time::Duration::days(self.signup_unconfirmed_days),
            signup_domains: self.signup_domains.clone(),
        })
    }

    /// The SMTP relay, if one is configured.
    pub fn smtp(&self) -> Result<Option<muster_mail::Smtp>> {
        self.smtp_url
            .as_deref()
            .map(|url| muster_mail::Smtp::new(url, &self.from).map_err(anyhow::Error::msg))
            .transpose()
    }
}

/// `public_url` without a trailing slash, checked to be an http(s) URL with a host.
fn checked_public_url(url: &str) -> Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(['?', '#', ' ']) => Ok(trimmed.to_owned()),
        _ => bail!("public_url must be an http:// or https:// URL without query or fragment, not {url:?}"),
    }
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use muster_core::redact::Redacted as _;
        f.debug_struct("Resolved")
            .field("listen", &self.listen)
            .field("database_url", &self.database_url.redacted())
            .field("data_dir", &self.data_dir)
            .field("secret_key", &self.secret_key.redacted())
            .field("admin_username", &self.admin_username)
            .field("admin_password", &self.admin_password.redacted())
            .field("argon2", &self.argon2)
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Flags and environment (already in `self`, by clap) over the TOML file, over defaults.
    pub fn resolve(self) -> Result<Resolved> {
        let merged = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let file: Settings = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
                overlay(&self, file)?
            }
            None => self,
        };
        merged.finish()
    }

    fn finish(self) -> Result<Resolved> {
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from("."));
        let database_url = self
            .database_url
            .unwrap_or_else(|| format!("sqlite:{}", data_dir.join("muster.db").display()));
        let log_format = self.log_format.unwrap_or_else(|| "text".into());
        if !matches!(log_format.as_str(), "text" | "json") {
            bail!("log_format must be text or json");
        }
        if self.event_retention_days.is_some_and(|d| d > MAX_EVENT_RETENTION_DAYS) {
            bail!("event_retention_days must be at most {MAX_EVENT_RETENTION_DAYS} (0 keeps events for ever)");
        }
        let policy = PasswordPolicy {
            min_length: self.password_min_length.unwrap_or(8),
            max_length: self.password_max_length.unwrap_or(256),
            reject_list: self
                .password_reject_list
                .map(|l| {
                    l.into_iter()
                        .map(|s| s.trim().to_lowercase())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_else(|| DEFAULT_REJECT_LIST.iter().map(|s| (*s).to_owned()).collect()),
        };
        if policy.min_length == 0 || policy.min_length > policy.max_length {
            bail!("password_min_length must be at least 1 and at most password_max_length");
        }
        let apps = self.apps.unwrap_or_else(|| vec!["muster".into()]);
        if apps.is_empty() || apps.iter().any(|a| a.trim().is_empty()) {
            bail!("apps must name at least one application, none empty");
        }
        let max_delay = positive("login_max_delay_secs", self.login_max_delay_secs.unwrap_or(900))?;
        let mut throttle = LoginThrottle::default();
        let per_account = self
            .login_failures_per_account
            .unwrap_or(throttle.per_account.free_failures);
        if !(1..=MAX_ACCOUNT_FAILURES).contains(&per_account) {
            // NIST SP 800-63B §5.2.2: no more than 100 consecutive failures per account.
            bail!("login_failures_per_account must be between 1 and {MAX_ACCOUNT_FAILURES}");
        }
        throttle.per_account.free_failures = per_account;
        if let Some(n) = self.login_failures_per_account_address {
            throttle.per_account_and_address.free_failures = n.max(1);
        }
        if let Some(n) = self.login_accounts_per_address {
            throttle.per_address.free_failures = n.max(1);
        }
        throttle.known_address_days = positive(
            "login_known_address_days",
            self.login_known_address_days.unwrap_or(throttle.known_address_days),
        )?;
        for policy in [
            &mut throttle.per_account_and_address,
            &mut throttle.per_account,
            &mut throttle.per_address,
        ] {
            policy.max_delay_secs = max_delay;
        }
        let directory = DirectoryConfig {
            approval_required: self.approval_required.unwrap_or(false),
            password_expiry_days: positive("password_expiry_days", self.password_expiry_days.unwrap_or(730))?,
            password_warn_days: self.password_warn_days.unwrap_or(30).max(0),
            default_totp_label: self.totp_label.unwrap_or_else(|| "muster".into()),
            apps,
            password_policy: policy,
            session_idle_secs: positive("session_idle_secs", self.session_idle_secs.unwrap_or(1800))?,
            session_absolute_secs: positive("session_absolute_secs", self.session_absolute_secs.unwrap_or(43_200))?,
            throttle,
        };
        let argon2 = Argon2Params {
            memory_kib: self.argon2_memory_kib.unwrap_or(19 * 1024),
            iterations: self.argon2_iterations.unwrap_or(2),
            parallelism: self.argon2_parallelism.unwrap_or(1),
        };
        let listen = checked_listen(self.listen.as_deref().unwrap_or("127.0.0.1:8080"))?;
        let mail = MailSettings {
            smtp_url: self.smtp_url.filter(|u| !u.trim().is_empty()),
            from: self.mail_from.unwrap_or_else(|| "muster@localhost".into()),
            public_url: checked_public_url(&self.public_url.unwrap_or_else(|| format!("http://{listen}")))?,
            templates_dir: self.mail_templates_dir,
            retry_base_secs: self.mail_retry_base_secs.unwrap_or(30).max(1),
            max_attempts: self.mail_max_attempts.unwrap_or(10).max(1),
            reset_minutes: positive("password_reset_minutes", self.password_reset_minutes.unwrap_or(30))?,
            reset_per_account: self.password_reset_per_account.unwrap_or(3).max(1),
            reset_per_address: self.password_reset_per_address.unwrap_or(20).max(1),
            invitation_days: positive("invitation_days", self.invitation_days.unwrap_or(7))?,
            signup: match self.signup.as_deref().map(str::trim) {
                None | Some("") => muster_directory::SignupMode::Off,
                Some(s) => muster_directory::SignupMode::parse(s)
                    .ok_or_else(|| anyhow::anyhow!("signup must be off, open or approval, not {s:?}"))?,
            },
            signup_confirm_hours: positive("signup_confirm_hours", self.signup_confirm_hours.unwrap_or(48))?,
            signup_unconfirmed_days: positive("signup_unconfirmed_days", self.signup_unconfirmed_days.unwrap_or(7))?,
            signup_domains: self
                .signup_email_domains
                .unwrap_or_default()
                .into_iter()
                .map(|d| d.trim().trim_start_matches('@').to_lowercase())
                .filter(|d| !d.is_empty())
                .collect(),
        };
        Ok(Resolved {
            listen,
            max_body_bytes: self.max_body_bytes.unwrap_or(64 * 1024),
            request_timeout_secs: self.request_timeout_secs.unwrap_or(30).max(1),
            worker_concurrency: self.worker_concurrency.unwrap_or(16),
            lease_secs: self.lease_secs.unwrap_or(30).max(1),
            retry_base_secs: self.retry_base_secs.unwrap_or(5).max(1),
            retry_max_attempts: self.retry_max_attempts.unwrap_or(20),
            event_retention_days: self.event_retention_days.unwrap_or(30),
            scheduler_tick_secs: self.scheduler_tick_secs.unwrap_or(10).max(1),
            trusted_proxies: self.trusted_proxies.unwrap_or_default(),
            console_secure_cookies: self.console_secure_cookies.unwrap_or(false),
            json_logs: log_format == "json",
            database_url,
            sqlite_max_size_mib: self.sqlite_max_size_mib.filter(|m| *m > 0),
            db_max_connections: self
                .db_max_connections
                // More connections than cores only add contention (the database shares the CPUs);
                // running processes queue for a connection like requests do.
                .unwrap_or_else(|| 2 * cores() as u32)
                .max(1),
            data_dir,
            secret_key: self.secret_key,
            admin_username: self.admin_username.unwrap_or_else(|| "admin".into()),
            admin_password: self.admin_password.filter(|p| !p.is_empty()),
            argon2,
            hash_workers: self.hash_workers.unwrap_or_else(cores).max(1),
            directory,
            mail,
        })
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

fn positive(name: &str, v: i64) -> Result<i64> {
    if v <= 0 {
        bail!("{name} must be positive");
    }
    Ok(v)
}

/// Fields set in `over` replace those in `base`.
fn overlay(over: &Settings, base: Settings) -> Result<Settings> {
    let mut merged = serde_json::to_value(base)?;
    let over_value = serde_json::to_value(over)?;
    if let (Some(m), Some(o)) = (merged.as_object_mut(), over_value.as_object()) {
        for (k, v) in o {
            if !v.is_null() {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    let mut out: Settings = serde_json::from_value(merged)?;
    // Not part of the file format: carried over from the command line / environment.
    out.config = over.config.clone();
    out.admin_password = over.admin_password.clone();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_environment_win_over_the_file_and_the_file_over_defaults() {
        let file: Settings =
            toml::from_str("listen = \"127.0.0.1:9000\"\npassword_min_length = 12\napps = [\"crm\"]\n").expect("toml");
        let cli = Settings {
            listen: Some("127.0.0.1:9100".into()),
            ..Default::default()
        };
        let r = overlay(&cli, file).expect("merge").finish().expect("valid");
        assert_eq!(r.listen, "127.0.0.1:9100");
        assert_eq!(r.directory.password_policy.min_length, 12);
        assert_eq!(r.directory.apps, vec!["crm".to_owned()]);
        assert_eq!(r.max_body_bytes, 65536);
        assert_eq!(r.database_url, "sqlite:./muster.db");
    }

    #[test]
    fn the_account_ceiling_follows_nist() {
        let r = Settings::default().finish().expect("defaults");
        assert_eq!(r.directory.throttle.per_account.free_failures, 100);
        assert_eq!(r.directory.throttle.per_account_and_address.free_failures, 5);
        assert_eq!(r.directory.throttle.per_address.free_failures, 50);
        let over = Settings {
            login_failures_per_account: Some(101),
            ..Default::default()
        };
        assert!(over.finish().is_err(), "more than 100 consecutive failures is refused");
        let delay = Settings {
            login_max_delay_secs: Some(2),
            ..Default::default()
        };
        let r = delay.finish().expect("valid");
        assert_eq!(r.directory.throttle.per_address.max_delay_secs, 2);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Settings>("lsten = \"x\"").is_err());
        let bad = Settings {
            password_min_length: Some(10),
            password_max_length: Some(9),
            ..Default::default()
        };
        assert!(bad.finish().is_err());
        let bad = Settings {
            log_format: Some("xml".into()),
            ..Default::default()
        };
        assert!(bad.finish().is_err());
        let bad = Settings {
            event_retention_days: Some(MAX_EVENT_RETENTION_DAYS + 1),
            ..Default::default()
        };
        assert!(bad.finish().is_err());
    }
}
