//! `switchyard`: the host and its command line. See `switchyard --help`.

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
