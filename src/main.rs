//! The `foster-passport` command.

use std::io::IsTerminal;

use clap::Parser;
use foster_passport::config::{Cli, Command};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FP_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => foster_passport::serve::run(args),
        Command::Client(c) => foster_passport::admin::client(c),
        Command::User(c) => foster_passport::admin::user(c),
        Command::Audit(c) => foster_passport::admin::audit(c),
        Command::Launch(args) => foster_passport::admin::launch(args),
        Command::Token(args) => foster_passport::admin::token(args),
        Command::Keygen(args) => foster_passport::admin::keygen(args),
        Command::ImportEligibility(args) => foster_passport::admin::import_eligibility(args),
        Command::Migrate(args) => foster_passport::admin::migrate(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("foster-passport: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
