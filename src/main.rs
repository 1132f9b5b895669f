//! The `hepeft` binary; see `docs/cli.md`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
