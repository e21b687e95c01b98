//! Thin entry point: all behaviour lives in the `cfy_recover` library.
fn main() -> std::process::ExitCode {
    cfy_recover::cli::main()
}
