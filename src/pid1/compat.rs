//! cfy-init invoked as `tini` or `dumb-init` (a symlink): their command lines and
//! environment variables, mapped onto `run -- CMD` ([`super::foreground`]) without the
//! boot steps or a config file. Options stop at the first non-option (POSIX getopt), so
//! the command's own flags are never taken for ours.
//!
//! | tini                       | here                                                   |
//! |----------------------------|--------------------------------------------------------|
//! | `-s`, `TINI_SUBREAPER`     | accepted; cfy-init always registers as subreaper       |
//! | `-g`, `TINI_KILL_PROCESS_GROUP` | signals go to the child's process group           |
//! | `-p SIG`                   | parent-death signal, forwarded like any other          |
//! | `-e CODE`                  | exit code CODE becomes 0 (repeatable)                  |
//! | `-w`                       | reaped orphans logged as warnings                      |
//! | `-v`, `TINI_VERBOSITY`     | more log output                                        |
//!
//! | dumb-init                  | here                                                   |
//! |----------------------------|--------------------------------------------------------|
//! | default (setsid)           | process-group mode                                     |
//! | `-c`, `DUMB_INIT_SETSID=0` | signals to the child only                              |
//! | `-r S:R`                   | rewrite S to R, R = 0 drops S                          |
//! | `-v`                       | more log output                                        |

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use super::foreground::{self, Options};

/// Grace between TERM and KILL for the group's leftovers (the supervisor's default).
const GRACE: Duration = Duration::from_secs(9);

/// Run as tini or dumb-init when argv[0] says so; None otherwise.
pub fn main_if_alias() -> Option<ExitCode> {
    let mut args = std::env::args_os();
    let argv0 = args.next()?;
    let base = std::path::Path::new(&argv0)
        .file_name()?
        .to_str()?
        .to_string();
    let rest: Vec<OsString> = args.collect();
    let code = match base.as_str() {
        "tini" | "tini-static" => tini(rest),
        "dumb-init" => dumb_init(rest),
        _ => return None,
    };
    Some(ExitCode::from(code.clamp(0, 255) as u8))
}

fn strings(args: Vec<OsString>) -> Result<Vec<String>, String> {
    args.into_iter()
        .map(|a| a.into_string().map_err(|a| format!("{a:?}: not UTF-8")))
        .collect()
}

fn version() -> String {
    format!("cfy-init {}", env!("CARGO_PKG_VERSION"))
}

fn start(argv: &[String], opts: &Options, verbosity: u32) -> i32 {
    super::signals::block_all();
    let level = match verbosity {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    crate::logging::init(crate::logging::LogFormat::Text, level, None);
    foreground::run(argv, opts)
}

/// tini's command line: `tini [-hsvwgl] [-p SIG] [-e CODE]... [--] PROGRAM [ARGS]`.
fn tini(args: Vec<OsString>) -> i32 {
    const USAGE: &str =
        "usage: tini [-h] [-s] [-v] [-w] [-g] [-p SIGNAL] [-e EXIT_CODE] [--] PROGRAM [ARGS]\n\
        (cfy-init as tini: -s is implied, signals are forwarded through one signalfd)";
    let args = match strings(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("[tini] {e}");
            return 1;
        }
    };
    let mut opts = Options::new(GRACE);
    opts.prog = "tini";
    let mut verbosity = 0u32;
    if std::env::var_os("TINI_KILL_PROCESS_GROUP").is_some() {
        opts.signal_group = true;
    }
    if let Some(v) = std::env::var("TINI_VERBOSITY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        verbosity = v;
    }
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if a == "--version" {
            println!("tini version 0.19.0 - {}", version());
            return 0;
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        let flags: Vec<char> = a[1..].chars().collect();
        let mut j = 0;
        while j < flags.len() {
            let f = flags[j];
            match f {
                'h' => {
                    println!("{USAGE}");
                    return 0;
                }
                'l' => {
                    println!("tini's command line, implemented by {}", version());
                    return 0;
                }
                's' => {}
                'g' => opts.signal_group = true,
                'w' => opts.warn_reaped = true,
                'v' => verbosity += 1,
                'p' | 'e' => {
                    // The value is the rest of this word, or the next word.
                    let value = if j + 1 < flags.len() {
                        flags[j + 1..].iter().collect::<String>()
                    } else {
                        i += 1;
                        match args.get(i) {
                            Some(v) => v.clone(),
                            None => {
                                eprintln!("[tini] option -{f} needs a value\n{USAGE}");
                                return 1;
                            }
                        }
                    };
                    j = flags.len();
                    if f == 'p' {
                        match super::parse_signal(&value) {
                            Some(s) => opts.pdeathsig = Some(s),
                            None => {
                                eprintln!("[tini] invalid signal: {value}");
                                return 1;
                            }
                        }
                    } else {
                        match value.parse::<u8>() {
                            Ok(c) => opts.expect.push(c),
                            Err(_) => {
                                eprintln!("[tini] invalid exit code: {value} (0 to 255)");
                                return 1;
                            }
                        }
                    }
                    continue;
                }
                _ => {
                    eprintln!("[tini] unknown option -{f}\n{USAGE}");
                    return 1;
                }
            }
            j += 1;
        }
        i += 1;
    }
    let argv = &args[i..];
    if argv.is_empty() {
        eprintln!("{USAGE}");
        return 1;
    }
    opts.verbose = verbosity > 0;
    start(argv, &opts, verbosity)
}

/// dumb-init's command line: `dumb-init [-c] [-r S:R]... [-v] [-V] [-h] [--] PROGRAM [ARGS]`.
fn dumb_init(args: Vec<OsString>) -> i32 {
    const USAGE: &str = "Usage: dumb-init [option] command [[arg] ...]\n\
        \n\
        Optional arguments:\n   \
        -c, --single-child   Signals go to the direct child only (no setsid).\n   \
        -r, --rewrite s:r    Rewrite received signal s to new signal r; r = 0 drops s.\n   \
        -v, --verbose        Print debugging information to stderr.\n   \
        -h, --help           Print this help message and exit.\n   \
        -V, --version        Print the current version and exit.\n\
        (cfy-init as dumb-init)";
    let args = match strings(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("[dumb-init] {e}");
            return 1;
        }
    };
    let setsid = std::env::var("DUMB_INIT_SETSID").map_or(true, |v| v != "0");
    let mut single_child = !setsid;
    let mut verbosity = 0u32;
    let mut rules = Vec::new();
    let mut i = 0;
    let bad_rewrite = || {
        eprintln!(
            "Usage: -r option takes <signum>:<signum>, where <signum> is a signal.\n\
             This option can be specified multiple times.\nUse --help for full usage."
        );
        1
    };
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--" => {
                i += 1;
                break;
            }
            "-h" | "--help" => {
                eprintln!("{}\n{USAGE}", version());
                return 0;
            }
            "-V" | "--version" => {
                eprintln!("{}", version());
                return 0;
            }
            "-c" | "--single-child" => single_child = true,
            "-v" | "--verbose" => verbosity += 1,
            "-r" | "--rewrite" => {
                i += 1;
                match args.get(i).map(|v| foreground::parse_rewrite(v)) {
                    Some(Ok(rule)) => rules.push(rule),
                    _ => return bad_rewrite(),
                }
            }
            _ if a.starts_with("--rewrite=") => {
                match foreground::parse_rewrite(&a["--rewrite=".len()..]) {
                    Ok(rule) => rules.push(rule),
                    Err(_) => return bad_rewrite(),
                }
            }
            _ if a.starts_with("-r") && a.len() > 2 => match foreground::parse_rewrite(&a[2..]) {
                Ok(rule) => rules.push(rule),
                Err(_) => return bad_rewrite(),
            },
            _ if a.starts_with('-') && a.len() > 1 => {
                eprintln!("dumb-init: unrecognized option '{a}'");
                return 1;
            }
            _ => break,
        }
        i += 1;
    }
    let argv = &args[i..];
    if argv.is_empty() {
        eprintln!("Usage: dumb-init [option] program [args]\nTry dumb-init --help for full usage.");
        return 1;
    }
    let mut opts = Options::new(GRACE);
    opts.prog = "dumb-init";
    opts.group_mode(!single_child);
    opts.suspend_self = true;
    for (sig, action) in rules {
        opts.actions.set(sig, action);
    }
    opts.verbose = verbosity > 0;
    start(argv, &opts, verbosity)
}
