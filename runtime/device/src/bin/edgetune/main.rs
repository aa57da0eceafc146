//! `edgetune`: the device program. Predicts in real time, takes labels, learns from each
//! at once, and keeps what it learned across power cuts. See `edgetune --help`, and the
//! request protocol in `edgetune_device::service`.
//!
//! `cli.rs` holds the command line; `serve.rs` the service loop and `sources.rs` where its
//! requests come from (stdin, a Unix socket, a watched directory, GPIO buttons);
//! `http/` the labeling page and the HTTP API; `predict.rs` the one-shot predictions; `states.rs` `status`, `rollback` and `reset`.

mod cli;
mod http;
mod predict;
mod serve;
mod sources;
mod states;

use clap::Parser;

use cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (_, true) => "debug",
        _ => "info",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
    let result = match cli.command {
        Command::Serve(a) => serve::serve(a),
        Command::Predict(a) => predict::predict(a),
        Command::Status(a) => states::status(a),
        Command::Rollback(a) => states::rollback(a),
        Command::Reset(a) => states::reset(a),
        Command::Token(a) => http::access::token(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
