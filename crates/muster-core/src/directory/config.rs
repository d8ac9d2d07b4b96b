//! Settings the directory's rules read.

use super::policy::PasswordPolicy;
use super::throttle::LoginThrottle;

#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// New users start `before_decision` and must be approved before they can log in.
    pub approval_required: bool,
    /// Days from when a password is set until it expires.
    pub password_expiry_days: i64,
    /// A login within this many days of expiry succeeds with warning `W003005`.
    pub password_warn_days: i64,
    /// Label given to TOTP keys when none is supplied.
    pub default_totp_label: String,
    /// Applications a caller may name as `current_app`; the first is the default.
    pub apps: Vec<String>,
    pub password_policy: PasswordPolicy,
    /// Sessions end after this long without use…
    pub session_idle_secs: i64,
    /// …and after this long in any case.
    pub session_absolute_secs: i64,
    /// How failed logins are counted and slowed.
    pub throttle: LoginThrottle,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            approval_required: false,
            password_expiry_days: 730,
            password_warn_days: 30,
            default_totp_label: "muster".into(),
            apps: vec!["muster".into()],
            password_policy: PasswordPolicy::default(),
            session_idle_secs: 30 * 60,
            session_absolute_secs: 12 * 3600,
            throttle: LoginThrottle::default(),
        }
    }
}
