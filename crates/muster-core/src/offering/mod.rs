//! Offering accounts: each person's account on each hosting offering, after Waldur's
//! marketplace offering users.

pub mod lifecycle;
pub mod membership;
pub mod model;
pub mod naming;
pub mod username;
