//! `muster mail test ADDRESS`: sends one message through the configured SMTP relay, at once
//! (not through the outbox), and says what the relay answered.

use crate::settings::Settings;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct MailCommand {
    #[command(subcommand)]
    action: MailAction,
    #[command(flatten)]
    settings: Box<Settings>,
}

#[derive(Subcommand)]
enum MailAction {
    /// Send a test message to ADDRESS with the mail settings (MUSTER_SMTP_URL, MUSTER_MAIL_FROM).
    Test { address: String },
}

pub async fn run(cmd: MailCommand) -> Result<()> {
    let resolved = cmd.settings.resolve()?;
    crate::runtime::init_logging(resolved.json_logs);
    match cmd.action {
        MailAction::Test { address } => {
            let Some(smtp) = resolved.mail.smtp()? else {
                bail!("no SMTP relay is configured: set MUSTER_SMTP_URL (or --smtp-url)");
            };
            let templates = muster_mail::Templates::load(resolved.mail.templates_dir.as_deref())?;
            let message = templates.render(
                muster_mail::kinds::TEST,
                &[("public_url", resolved.mail.public_url.as_str())],
                None,
            )?;
            let id = format!("<{}@muster>", uuid::Uuid::new_v4());
            smtp.send(&address, &message, &id)
                .await
                .map_err(|e| anyhow::anyhow!("sending to {address}: {e}"))?;
            println!("sent a test message to {address} from {}", smtp.from());
            Ok(())
        }
    }
}
