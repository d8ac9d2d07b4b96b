//! What must hold, after the credentials and the TOTP code, for a user to log in or keep using
//! a session. Checks run in Zato's order: locked, approval, sign-up status, password expiry,
//! must-change.

use super::config::DirectoryConfig;
use super::user::{ApprovalStatus, SignUpStatus, User};
use crate::error::{DomainError, codes};
use time::{Duration, OffsetDateTime};

/// The result of the account checks at login.
#[derive(Debug, PartialEq, Eq)]
pub struct LoginVerdict {
    /// The login must store the `new_password` it carries (expired or must-change).
    pub must_set_new_password: bool,
    /// Zato's `W003005`: the password expires soon.
    pub about_to_expire: bool,
}

/// Account checks at login. `has_new_password`: the login carries a `new_password`.
pub fn check_login(
    user: &User,
    now: OffsetDateTime,
    config: &DirectoryConfig,
    has_new_password: bool,
) -> Result<LoginVerdict, DomainError> {
    if user.is_locked {
        return Err(DomainError::forbidden(codes::LOCKED, "account is locked"));
    }
    if user.approval_status != ApprovalStatus::Approved {
        return Err(DomainError::forbidden(codes::NOT_APPROVED, "account is not approved"));
    }
    if user.sign_up_status != SignUpStatus::Final {
        return Err(DomainError::forbidden(
            codes::SIGN_UP_NOT_FINAL,
            "sign-up is not complete",
        ));
    }
    let expired = now >= user.password_expiry;
    if expired && !has_new_password {
        // Unlike Zato, an expired password can be replaced at login: the caller has just
        // proven they know it.
        return Err(DomainError::forbidden(
            codes::PASSWORD_EXPIRED,
            "password has expired; log in with new_password",
        ));
    }
    if user.password_must_change && !has_new_password {
        return Err(DomainError::forbidden(
            codes::PASSWORD_MUST_CHANGE,
            "password must be changed; log in with new_password",
        ));
    }
    let must_set_new_password = expired || user.password_must_change;
    let about_to_expire =
        !must_set_new_password && now >= user.password_expiry - Duration::days(config.password_warn_days);
    Ok(LoginVerdict {
        must_set_new_password,
        about_to_expire,
    })
}

/// Whether an existing session of `user` may still be used (Zato re-runs its user checks on
/// every session use; so does muster, besides revoking sessions when the state changes).
pub fn session_usable(user: &User, now: OffsetDateTime) -> bool {
    !user.is_locked
        && user.approval_status == ApprovalStatus::Approved
        && user.sign_up_status == SignUpStatus::Final
        && now < user.password_expiry
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::update::tests::user;

    #[test]
    fn checks_run_in_zato_order() {
        let cfg = DirectoryConfig::default();
        let now = crate::clock::now();
        let mut u = user();
        u.is_locked = true;
        u.approval_status = ApprovalStatus::Rejected;
        u.password_expiry = now - Duration::days(1);
        assert_eq!(
            check_login(&u, now, &cfg, false).map_err(|e| e.code),
            Err(codes::LOCKED)
        );
        u.is_locked = false;
        assert_eq!(
            check_login(&u, now, &cfg, false).map_err(|e| e.code),
            Err(codes::NOT_APPROVED)
        );
        u.approval_status = ApprovalStatus::Approved;
        u.sign_up_status = SignUpStatus::BeforeConfirmation;
        assert_eq!(
            check_login(&u, now, &cfg, false).map_err(|e| e.code),
            Err(codes::SIGN_UP_NOT_FINAL)
        );
        u.sign_up_status = SignUpStatus::Final;
        assert_eq!(
            check_login(&u, now, &cfg, false).map_err(|e| e.code),
            Err(codes::PASSWORD_EXPIRED)
        );
        let v = check_login(&u, now, &cfg, true).expect("an expired password can be replaced at login");
        assert!(v.must_set_new_password);
        assert!(!session_usable(&u, now), "sessions of an expired password end");
    }

    #[test]
    fn must_change_and_about_to_expire() {
        let cfg = DirectoryConfig::default();
        let now = crate::clock::now();
        let mut u = user();
        u.password_must_change = true;
        assert_eq!(
            check_login(&u, now, &cfg, false).map_err(|e| e.code),
            Err(codes::PASSWORD_MUST_CHANGE)
        );
        assert!(
            check_login(&u, now, &cfg, true)
                .expect("with new_password")
                .must_set_new_password
        );
        u.password_must_change = false;
        u.password_expiry = now + Duration::days(10);
        let v = check_login(&u, now, &cfg, false).expect("allowed");
        assert!(v.about_to_expire && !v.must_set_new_password);
        u.password_expiry = now + Duration::days(100);
        assert!(!check_login(&u, now, &cfg, false).expect("allowed").about_to_expire);
        assert!(session_usable(&u, now));
    }
}
