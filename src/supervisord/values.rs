//! supervisord's value syntaxes: `%(name)s` expansion, `KEY="v",K2=v2` environment lists
//! (Python's non-POSIX `shlex` as supervisord configures it), booleans, byte sizes,
//! octal umasks, exit-code lists and signal names. Written by hand: these are small
//! grammars with Python-specific edge cases that no crate reproduces.

use std::collections::BTreeMap;

/// Python's `s % mapping` for `%(name)s` / `%(name)d` and `%%`, as supervisord's `expand`.
pub fn expand(s: &str, names: &BTreeMap<String, String>, option: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('%') {
            out.push('%');
            rest = r;
            continue;
        }
        let bad = || format!("format string {s:?} for {option:?} is badly formatted");
        let inner = after.strip_prefix('(').ok_or_else(bad)?;
        let close = inner.find(')').ok_or_else(bad)?;
        let key = &inner[..close];
        // Optional flags/width (e.g. `%(process_num)02d`), then the conversion letter.
        let spec = &inner[close + 1..];
        let conv_at = spec
            .find(|c: char| !(c.is_ascii_digit() || "-+ #.".contains(c)))
            .ok_or_else(bad)?;
        let conv = spec[conv_at..].chars().next().ok_or_else(bad)?;
        if !"sdir".contains(conv) {
            return Err(bad());
        }
        let value = names.get(key).ok_or_else(|| {
            let avail: Vec<&str> = names.keys().map(String::as_str).collect();
            format!(
                "format string {s:?} for {option:?} contains names ({key}) which cannot be expanded; available names: {}",
                avail.join(", ")
            )
        })?;
        let width: usize = spec[..conv_at]
            .trim_start_matches(['-', '+', ' ', '#', '0'])
            .parse()
            .unwrap_or(0);
        let zero = spec.starts_with('0');
        if zero && value.len() < width {
            out.extend(std::iter::repeat('0').take(width - value.len()));
        } else if value.len() < width {
            out.extend(std::iter::repeat(' ').take(width - value.len()));
        }
        out.push_str(value);
        rest = &spec[conv_at + conv.len_utf8()..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `KEY="value",KEY2=value2` → map; quotes are stripped, commas inside quotes kept.
pub fn key_value_pairs(arg: &str) -> Result<BTreeMap<String, String>, String> {
    let tokens = shlex_tokens(arg)?;
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < tokens.len() {
        let triple = &tokens[i..tokens.len().min(i + 3)];
        if triple.len() != 3 || triple[1] != "=" {
            return Err(format!(
                "unexpected end of key/value pairs in value {arg:?}"
            ));
        }
        out.insert(
            triple[0].clone(),
            triple[2].trim_matches(['\'', '"']).to_string(),
        );
        i += 4; // skip the separating comma (or whatever single token follows)
    }
    Ok(out)
}

/// Tokens of Python's `shlex.shlex(s)` (non-POSIX) with `/.+-():` added to the word chars.
fn shlex_tokens(s: &str) -> Result<Vec<String>, String> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || "_/.+-():".contains(c);
    let mut tokens = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        if c == '#' {
            for c in chars.by_ref() {
                if c == '\n' {
                    break;
                }
            }
            continue;
        }
        if c == '"' || c == '\'' {
            let mut tok = String::from(c);
            loop {
                match chars.next() {
                    Some(q) if q == c => {
                        tok.push(q);
                        break;
                    }
                    Some(x) => tok.push(x),
                    None => return Err(format!("no closing quotation in {s:?}")),
                }
            }
            tokens.push(tok);
            continue;
        }
        if is_word(c) {
            let mut tok = String::from(c);
            while let Some(&n) = chars.peek() {
                if !is_word(n) {
                    break;
                }
                tok.push(n);
                chars.next();
            }
            tokens.push(tok);
            continue;
        }
        tokens.push(c.to_string());
    }
    Ok(tokens)
}

pub fn boolean(s: &str) -> Result<bool, String> {
    match s.trim().to_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("not a valid boolean value: {s:?}")),
    }
}

pub fn integer(s: &str) -> Result<i64, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("not a valid integer value: {s:?}"))
}

/// `50MB`, `1KB`, `1GB` or a plain number of bytes.
pub fn byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_uppercase();
    let (num, mult) = [("KB", 1u64 << 10), ("MB", 1 << 20), ("GB", 1 << 30)]
        .iter()
        .find_map(|(suf, m)| t.strip_suffix(suf).map(|n| (n.to_string(), *m)))
        .unwrap_or((t.clone(), 1));
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| *n >= 0.0)
        .map(|n| (n * mult as f64) as u64)
        .ok_or_else(|| format!("not a valid byte size: {s:?}"))
}

/// `0027` → "0027" after checking it is octal.
pub fn octal(s: &str) -> Result<String, String> {
    let t = s.trim();
    u32::from_str_radix(t.trim_start_matches("0o"), 8)
        .map(|_| t.to_string())
        .map_err(|_| format!("{s:?} can not be converted to an octal type"))
}

pub fn exit_codes(s: &str) -> Result<Vec<i32>, String> {
    s.split(',')
        .map(|c| {
            c.trim()
                .parse::<i32>()
                .ok()
                .filter(|n| (0..=255).contains(n))
                .ok_or_else(|| format!("not a valid list of exit codes: {s:?}"))
        })
        .collect()
}

/// A signal name (`TERM`, `SIGTERM`) or number → its canonical name without `SIG`.
pub fn signal_name(s: &str) -> Result<String, String> {
    let t = s.trim();
    let sig = match t.parse::<i32>() {
        Ok(n) => nix::sys::signal::Signal::try_from(n).ok(),
        Err(_) => {
            let up = t.to_uppercase();
            let full = if up.starts_with("SIG") {
                up
            } else {
                format!("SIG{up}")
            };
            full.parse::<nix::sys::signal::Signal>().ok()
        }
    };
    sig.map(|s| s.as_str().trim_start_matches("SIG").to_string())
        .ok_or_else(|| format!("value {s:?} is not a valid signal name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> BTreeMap<String, String> {
        [("program_name", "web"), ("ENV_HOME", "/root"), ("n", "7")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn expansion_like_python() {
        let n = names();
        assert_eq!(
            expand("%(program_name)s at %(ENV_HOME)s 100%%", &n, "x").unwrap(),
            "web at /root 100%"
        );
        assert_eq!(expand("%(n)03d", &n, "x").unwrap(), "007");
        assert!(expand("%(nope)s", &n, "x").unwrap_err().contains("nope"));
        assert!(expand("50% off", &n, "x").is_err());
    }

    #[test]
    fn environment_lists() {
        let env = key_value_pairs(
            "HOME=\"/etc/cloudify\",\n USER=\"cfyuser\",KERBEROS_ENV=false,\nX='a,b',URL=https://h:2379,",
        )
        .unwrap();
        assert_eq!(env["HOME"], "/etc/cloudify");
        assert_eq!(env["KERBEROS_ENV"], "false");
        assert_eq!(env["X"], "a,b");
        assert_eq!(env["URL"], "https://h:2379");
        assert!(key_value_pairs("A=\"1\",B").is_err());
        assert!(key_value_pairs("A=\"1").is_err());
        assert!(key_value_pairs("").unwrap().is_empty());
    }

    #[test]
    fn scalars() {
        assert_eq!(byte_size("50MB").unwrap(), 50 << 20);
        assert_eq!(byte_size("0").unwrap(), 0);
        assert!(byte_size("lots").is_err());
        assert_eq!(exit_codes("0,69").unwrap(), vec![0, 69]);
        assert!(exit_codes("0,x").is_err());
        assert_eq!(signal_name("sigint").unwrap(), "INT");
        assert_eq!(signal_name("15").unwrap(), "TERM");
        assert!(signal_name("NOPE").is_err());
        assert!(octal("0027").is_ok());
        assert!(octal("0089").is_err());
        assert!(boolean("maybe").is_err());
    }
}
