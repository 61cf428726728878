//! The `reins` binary: a thin shell over the library (see `cli`).

fn main() -> std::process::ExitCode {
    reins::cli::main()
}
