//! Thin entry point: all behaviour lives in the `cfy_init` library.
fn main() -> std::process::ExitCode {
    cfy_init::cli::main()
}
