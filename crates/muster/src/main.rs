//! `muster`: the system of record for people and their accounts.

mod admin;
mod mail;
mod runtime;
mod serve;
mod settings;
mod worker;

use clap::{Parser, Subcommand};

/// glibc's allocator keeps freed memory in per-thread arenas (one per SQLite connection
/// thread, one per hashing thread) and raises its mmap threshold after the first 19 MiB argon2
/// buffer is freed, so a server's resident memory only ever grows. mimalloc returns freed pages
/// to the system promptly, which keeps muster's footprint near its working set.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use settings::{Settings, shown_only, used_by};

#[derive(Parser)]
#[command(
    name = "muster",
    version,
    about = "The system of record for people and their accounts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API (SQLite in ./muster.db unless told otherwise).
    Serve(Box<Settings>),
    /// Run only the workflow engine: workers and the scheduler, no HTTP. Any number of these
    /// share one PostgreSQL database with `serve` nodes.
    #[command(mut_args = shown_only(&[used_by::COMMON, used_by::STORAGE, used_by::DIRECTORY, used_by::ENGINE]))]
    Worker(Box<Settings>),
    /// Apply database migrations, then exit.
    #[command(mut_args = shown_only(&[used_by::COMMON, used_by::STORAGE]))]
    Migrate(Box<Settings>),
    /// Print the OpenAPI document (JSON) to standard output.
    Openapi,
    /// Manage directory users from the command line.
    #[command(mut_args = shown_only(&[used_by::COMMON, used_by::STORAGE, used_by::DIRECTORY]))]
    User(admin::UserCommand),
    /// Mail: check the SMTP settings.
    #[command(mut_args = shown_only(&[used_by::COMMON, used_by::SMTP]))]
    Mail(mail::MailCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli.command)));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line that names what failed and why (each cause after a colon), never a
            // backtrace: a refused command is not a crash.
            eprintln!("muster: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(settings) => serve::run(settings.resolve()?).await,
        Command::Worker(settings) => worker::run(settings.resolve()?).await,
        Command::Migrate(settings) => {
            let resolved = settings.resolve()?;
            runtime::init_logging(resolved.json_logs);
            let store = runtime::open_store(&resolved).await?;
            store.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Openapi => print_quietly(&muster_server::openapi_document().to_pretty_json()?),
        Command::User(cmd) => admin::run(cmd).await,
        Command::Mail(cmd) => mail::run(cmd).await,
    }
}

/// Writes `text` to standard output; a reader that went away (`muster openapi | head`) ends
/// the command quietly, as it does for Unix tools.
fn print_quietly(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
