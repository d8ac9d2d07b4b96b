//! Sessions, one room each: `login` (opening a session), `throttle` (the login throttle every
//! password check passes), `authenticate` (every use of a session token) and `lifetime`
//! (renewal, logout, listing, revocation and the purge of what expired).
//!
//! This module holds what they share: when a session ends. A session lasts while it is used
//! at least once per idle period, and never past its absolute expiry.

mod authenticate;
mod lifetime;
mod login;
mod throttle;

pub use lifetime::SessionView;
pub use login::{LoginInput, LoginOutcome};

use crate::Directory;
use muster_store::SessionRecord;
use time::{Duration, OffsetDateTime};

impl Directory {
    fn idle(&self) -> Duration {
        Duration::seconds(self.config.session_idle_secs)
    }

    pub(crate) fn effective_expiry(&self, s: &SessionRecord) -> OffsetDateTime {
        (s.last_seen_at + self.idle()).min(s.expires_at)
    }
}
