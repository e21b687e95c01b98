//! Limits checked on the raw config text before the YAML parser sees it. libyaml (under
//! serde_norway) re-scans its stack of flow levels at every token, so flow collections
//! (`[...]`, `{...}`) nested N deep cost O(N²): 20 000 levels took 36 s, 100 000 hung. A
//! linear pre-scan rejects such a document at once with a clear error, as it does a file
//! larger than [`MAX_CONFIG_BYTES`]. Block nesting
//! (indentation, `- - - x`) parses in linear time and is left to the parser, whose own
//! recursion limit then applies when deserializing.

/// Largest config file accepted: a real one is a few KiB; 2 MiB (about 45 000 one-line
/// service definitions) still loads well under a second, while a 9 MB file of 200 000
/// services would take seconds, so it is refused at once instead.
pub const MAX_CONFIG_BYTES: usize = 2 << 20;

/// Deepest nesting of flow collections accepted (a real config nests 2 or 3 deep).
pub const MAX_FLOW_DEPTH: usize = 256;

/// The first place where flow collections nest deeper than [`MAX_FLOW_DEPTH`], as
/// (line, column), both 1-based. Quoted scalars and comments are skipped; outside flow
/// context a `[` or `{` counts only where a node may start (at the start of a line or after
/// `:`, `-`, `?`, `,`), so brackets inside plain text do not count.
pub fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    let (mut line, mut col) = (1usize, 0usize);
    // A node may start at the next non-blank character; the previous one was a blank.
    let (mut node_start, mut after_blank) = (true, true);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        col += 1;
        match c {
            '\n' => {
                line += 1;
                col = 0;
                node_start = true;
                after_blank = true;
                continue;
            }
            ' ' | '\t' | '\r' => {
                after_blank = true;
                continue;
            }
            '#' if after_blank => {
                // A comment, to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        col = 0;
                        node_start = true;
                        break;
                    }
                }
                continue;
            }
            '\'' | '"' if node_start => {
                while let Some(q) = chars.next() {
                    col += 1;
                    if q == '\n' {
                        line += 1;
                        col = 0;
                    } else if q == '\\' && c == '"' {
                        if chars.next() == Some('\n') {
                            line += 1;
                            col = 0;
                        } else {
                            col += 1;
                        }
                    } else if q == c {
                        if c == '\'' && chars.peek() == Some(&'\'') {
                            chars.next();
                            col += 1;
                        } else {
                            break;
                        }
                    }
                }
                node_start = false;
            }
            '[' | '{' if depth > 0 || node_start => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some((line, col));
                }
                node_start = true;
            }
            ']' | '}' if depth > 0 => {
                depth -= 1;
                node_start = false;
            }
            ':' | '-' | '?' | ',' => node_start = true,
            _ => node_start = false,
        }
        after_blank = false;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_configs_pass_and_deep_flow_nesting_is_found_at_once() {
        for ok in [
            "a: [b, {c: d}]\n",
            "cmd: [sh, -c, 'echo [[[[x']\n# [[[[ comment\n",
            "text: a [[[[ b\n",
            "q: \"[[[[\\\"[[[\"\n",
            &format!(
                "deep: {}{}\n",
                "[".repeat(MAX_FLOW_DEPTH),
                "]".repeat(MAX_FLOW_DEPTH)
            ),
        ] {
            assert_eq!(too_deep(ok), None, "{ok}");
        }
        let deep = format!("log:\n  level: {}\n", "[".repeat(100_000));
        assert_eq!(too_deep(&deep), Some((2, 10 + MAX_FLOW_DEPTH)));
        let braces = format!("a: {}", "{a: ".repeat(MAX_FLOW_DEPTH + 1));
        assert!(too_deep(&braces).is_some());
    }
}
