//! The `hepeft` command line: argument types ([`args`]), shared helpers ([`common`]) and
//! one module per command ([`cmd`]). Thin by design: every step is a library call; this
//! layer adds file handling, consistency checks between files, and reports.
//!
//! Conventions: data and reports go to stdout (`--json` for a machine-readable form),
//! progress and timings of the pipeline commands to stderr. Exit codes: 0 success,
//! 1 failure (the whole cause chain is printed), 2 usage error.

pub mod args;
pub mod cmd;
pub mod common;

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser as _;
use serde::Serialize;

#[cfg(feature = "exact")]
use args::Backend;
use args::{Cli, Command, ParamsCmd};

/// Where output goes.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    /// Machine-readable JSON on stdout instead of text.
    pub json: bool,
    /// No output at all: no report, progress bar or note (the demo runs the commands
    /// quietly and prints its own report).
    pub quiet: bool,
}

impl Ui {
    /// Writes to stdout; a closed pipe (`hepeft ... | head`) is not an error.
    pub fn out(&self, text: &str) -> Result<()> {
        let mut o = std::io::stdout().lock();
        match o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(e).context("writing to stdout")
            }
            _ => Ok(()),
        }
    }

    /// Writes a note to stderr (progress, timings) unless quiet.
    pub fn note(&self, text: &str) {
        if !self.quiet {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }

    /// Emits a report: JSON on stdout with `--json`, else `text` on stdout (`to_stdout`)
    /// or stderr; nothing when quiet.
    pub fn report<T: Serialize>(&self, report: &T, text: &str, to_stdout: bool) -> Result<()> {
        if self.quiet {
            Ok(())
        } else if self.json {
            let mut s = serde_json::to_string_pretty(report)?;
            s.push('\n');
            self.out(&s)
        } else if to_stdout {
            self.out(text)
        } else {
            self.note(text);
            Ok(())
        }
    }
}

/// Parses the command line, runs the command, maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "error: {e}");
            for cause in e.chain().skip(1) {
                let _ = writeln!(err, "  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        // Capped: --threads 100000 would hang, 5,000 turn a 10 ms decrypt into 47 s.
        hepeft::io::limits::check_threads(n.get())?;
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.get())
            .build_global()
            .context("setting up the thread pool")?;
    }
    let ui = Ui {
        json: cli.json,
        quiet: false,
    };
    match &cli.command {
        Command::Params(ParamsCmd::List) => cmd::params::list(&ui),
        Command::Params(ParamsCmd::Show { params }) => cmd::params::show(params, &ui),
        #[cfg(feature = "exact")]
        Command::Params(ParamsCmd::Select(a)) if a.backend == Backend::Exact => {
            cmd::exact::select(a, &ui)
        }
        #[cfg(feature = "exact")]
        Command::Keygen(a) if a.backend == Backend::Exact => cmd::exact::keygen(a, &ui),
        #[cfg(feature = "exact")]
        Command::Encrypt(a) if a.backend == Backend::Exact => cmd::exact::encrypt(a, &ui),
        #[cfg(feature = "exact")]
        Command::Evaluate(a) if a.backend == Backend::Exact => cmd::exact::evaluate(a, &ui),
        #[cfg(feature = "exact")]
        Command::Decrypt(a) if a.backend == Backend::Exact => cmd::exact::decrypt(a, &ui),
        Command::Params(ParamsCmd::Select(a)) if a.argmax => Err(anyhow::anyhow!(
            "--argmax (encrypted argmax) needs --backend exact"
        )),
        Command::Params(ParamsCmd::Select(a)) if cmd::token::is_token_card(&a.model) => {
            cmd::token::select(a, &ui)
        }
        Command::Keygen(a) if cmd::token::is_token_card(&a.model) => cmd::token::keygen(a, &ui),
        Command::Encrypt(a) if cmd::token::is_token_card(&a.model) => cmd::token::encrypt(a, &ui),
        Command::Evaluate(a) if cmd::token::is_token_card(&a.model) => cmd::token::evaluate(a, &ui),
        Command::Decrypt(a) if cmd::token::is_token_card(&a.model) => cmd::token::decrypt(a, &ui),
        Command::Publish(a) if cmd::token::is_token_card(&a.model) => cmd::token::publish(a, &ui),
        #[cfg(feature = "serve")]
        Command::Serve(a) if cmd::token::is_token_card(&a.model) => {
            cmd::token::refuse_serve(&a.model)
        }
        Command::Params(ParamsCmd::Select(a)) => cmd::params::select(a, &ui),
        Command::Keygen(a) => cmd::keygen::run(a, &ui).map(|_| ()),
        Command::Encrypt(a) => cmd::encrypt::run(a, &ui).map(|_| ()),
        Command::Evaluate(a) => cmd::evaluate::run(a, &ui).map(|_| ()),
        Command::Decrypt(a) => cmd::decrypt::run(a, &ui).map(|_| ()),
        Command::Inspect(a) => cmd::inspect::run(a, &ui),
        Command::Publish(a) => cmd::publish::run(a, &ui).map(|_| ()),
        Command::ImportPeft(a) => cmd::import_peft::run(a, &ui).map(|_| ()),
        Command::Demo(a) => cmd::demo::run(a, &ui),
        #[cfg(feature = "serve")]
        Command::Serve(a) => cmd::serve::run(a, &ui),
        #[cfg(feature = "serve")]
        Command::Query(a) => cmd::serve::query(a, &ui),
        Command::Tune(a) => cmd::tune::run(a, &ui),
        #[cfg(not(feature = "serve"))]
        Command::Serve(_) | Command::Query(_) => Err(anyhow::anyhow!(
            "this hepeft was built without the `serve` feature (cargo build --features serve)"
        )),
    }
}
