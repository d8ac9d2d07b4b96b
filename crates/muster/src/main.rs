//! `muster`: the system of record for people and their accounts.

mod admin;
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
use settings::Settings;

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
    Worker(Box<Settings>),
    /// Apply database migrations, then exit.
    Migrate(Box<Settings>),
    /// Print the OpenAPI document (JSON) to standard output.
    Openapi,
    /// Manage directory users from the command line.
    User(admin::UserCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.command {
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
            Command::Openapi => {
                println!("{}", muster_server::openapi_document().to_pretty_json()?);
                Ok(())
            }
            Command::User(cmd) => admin::run(cmd).await,
        }
    })
}
