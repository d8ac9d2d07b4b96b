//! `muster user …`: directory administration from the command line. These commands act on
//! the database directly (with the same rules and audit records as the API); they are how
//! super-users come to exist.

use crate::runtime;
use crate::settings::Settings;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use muster_core::credentials::password::generate_password;
use muster_core::directory::create::CreateUserInput;
use std::io::BufRead as _;

#[derive(Args)]
pub struct UserCommand {
    #[command(subcommand)]
    action: UserAction,
    #[command(flatten)]
    settings: Box<Settings>,
}

#[derive(Subcommand)]
enum UserAction {
    /// Create a super-user.
    CreateSuperUser(NewUser),
    /// Create a regular user (approved automatically).
    Create(NewUser),
    /// Set a user's password: read from standard input with --password-stdin, or generated
    /// and printed once (then it must be changed at next login). Ends the user's sessions.
    SetPassword {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Lock a user (ends their sessions).
    Lock { username: String },
    /// Unlock a user.
    Unlock { username: String },
    /// Let a user who is shut out back in (typically a super-user who set their own sign-up
    /// back or lost their second factor): unlock, sign-up final, approval approved, TOTP off
    /// (a new enrolment is needed to switch it on again), every session ended. The password
    /// stays; use set-password for that. Audited as user.recover.
    Recover { username: String },
}

#[derive(Args)]
struct NewUser {
    /// The new user's login name (unique in the directory).
    username: String,
    /// The user's mail address (needed for --invite).
    #[arg(long)]
    email: Option<String>,
    /// The name shown for the user.
    #[arg(long)]
    display_name: Option<String>,
    /// The user's given name.
    #[arg(long)]
    first_name: Option<String>,
    /// The user's middle name.
    #[arg(long)]
    middle_name: Option<String>,
    /// The user's family name.
    #[arg(long)]
    last_name: Option<String>,
    /// Read the password from the first line of standard input (passwords on the command line
    /// would show in the process list). Without it, a one-time password is generated and
    /// printed, and must be changed at first login.
    #[arg(long)]
    password_stdin: bool,
    /// Instead of a password, mail an invitation (a single-use link to set one) to --email.
    #[arg(long, conflicts_with = "password_stdin", requires = "email")]
    invite: bool,
}

fn read_password() -> Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let pw = line.trim_end_matches(['\r', '\n']).to_owned();
    if pw.is_empty() {
        bail!("no password on standard input");
    }
    Ok(pw)
}

pub async fn run(cmd: UserCommand) -> Result<()> {
    let resolved = cmd.settings.resolve()?;
    runtime::init_logging(resolved.json_logs);
    let directory = runtime::directory(&resolved).await?;
    let ctx = muster_directory::cli_ctx();
    let result = match cmd.action {
        UserAction::CreateSuperUser(u) => create(&directory, &ctx, u, true).await,
        UserAction::Create(u) => create(&directory, &ctx, u, false).await,
        UserAction::SetPassword {
            username,
            password_stdin,
        } => {
            let password = if password_stdin { Some(read_password()?) } else { None };
            match directory
                .cli_set_password(&ctx, &username, password)
                .await
                .map_err(refused)?
            {
                Some(pw) => println!("one-time password for '{username}': {pw}\nit must be changed at next login."),
                None => println!("password set for '{username}'"),
            }
            Ok(())
        }
        UserAction::Lock { username } => {
            directory.cli_set_locked(&ctx, &username, true).await.map_err(refused)?;
            println!("locked '{username}'");
            Ok(())
        }
        UserAction::Recover { username } => {
            let (user, changed) = directory.cli_recover(&ctx, &username).await.map_err(refused)?;
            let changed = if changed.is_empty() {
                "nothing needed undoing".to_owned()
            } else {
                format!("changed: {}", changed.join(", "))
            };
            println!(
                "recovered '{username}' ({}): {changed}; every session ended",
                user.user_id()
            );
            Ok(())
        }
        UserAction::Unlock { username } => {
            directory
                .cli_set_locked(&ctx, &username, false)
                .await
                .map_err(refused)?;
            println!("unlocked '{username}'");
            Ok(())
        }
    };
    directory.store().close().await;
    result
}

/// A refusal as the command line shows it.
fn refused(e: muster_core::error::DomainError) -> anyhow::Error {
    if e.code == muster_core::error::codes::NOT_FOUND {
        anyhow::anyhow!("no such user")
    } else {
        anyhow::anyhow!("{}: {}", e.code, e.message)
    }
}

async fn create(
    directory: &muster_directory::Directory,
    ctx: &muster_core::audit::RequestCtx,
    u: NewUser,
    super_user: bool,
) -> Result<()> {
    let (password, one_time) = if u.invite {
        // No password: the directory invites a user made without one.
        (None, None)
    } else if u.password_stdin {
        (Some(read_password()?), None)
    } else {
        let pw = generate_password();
        (Some(pw.clone()), Some(pw))
    };
    let invited = u.invite.then(|| u.email.clone()).flatten();
    let input = CreateUserInput {
        username: Some(u.username.clone()),
        password,
        password_must_change: Some(one_time.is_some()),
        email: u.email,
        display_name: u.display_name,
        first_name: u.first_name,
        middle_name: u.middle_name,
        last_name: u.last_name,
        ..Default::default()
    };
    let user = directory
        .create_user_cli(ctx, input, super_user)
        .await
        .map_err(refused)?;
    println!(
        "created {}'{}' with user_id {}",
        if super_user { "super-user " } else { "" },
        user.username,
        user.user_id()
    );
    if let Some(pw) = one_time {
        println!("one-time password: {pw}\nit must be changed at first login.");
    }
    if let Some(email) = invited {
        println!(
            "invitation queued for {email} (GET /api/users/{}/invitation shows its link while unsent)",
            user.user_id()
        );
    }
    Ok(())
}
