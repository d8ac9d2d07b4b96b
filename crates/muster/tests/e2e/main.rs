//! muster end to end: the real `muster` binary, started on a fresh database (SQLite, and
//! PostgreSQL when MUSTER_TEST_DATABASE_URL is set), driven over HTTP as clients drive it; one
//! module per resource or concern, in one test binary (one link instead of one per file).

mod common;

mod cli;
mod console;
mod durability;
mod event_fanout;
mod events;
mod fuzz_openapi;
mod hardening;
mod house;
mod joined;
mod mail;
mod membership;
mod multinode;
mod offerings;
mod openapi;
mod outages;
mod posix;
mod sessions;
mod smoke;
mod totp;
mod users;
mod workflows;
