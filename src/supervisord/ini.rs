//! The INI dialect supervisord reads: Python's `RawConfigParser` as supervisord configures it
//! (`;`/`#` full-line and inline comments, `=`/`:` delimiters, indented continuation lines,
//! lower-cased keys, later duplicates win; but a `[program:x]` given twice, in one file or
//! in two, is an error naming both places). Written by hand because no crate reproduces
//! these exact rules, and every option must keep its file and line for error messages.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One `key = value` with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub file: PathBuf,
    pub line: usize,
}

/// One `[name]` section (sections of the same name in several files are merged).
#[derive(Debug, Clone, PartialEq)]
pub struct IniSection {
    pub name: String,
    pub file: PathBuf,
    pub line: usize,
    pub entries: Vec<Entry>,
}

impl IniSection {
    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.key == key)
    }
}

/// Sections in the order they first appeared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ini {
    pub sections: Vec<IniSection>,
    /// Section name → index in `sections`: a file of 20 000 programs would otherwise cost
    /// a linear search per header (quadratic in the number of sections).
    index: HashMap<String, usize>,
}

/// A syntax error, with file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {msg}", file.display())]
pub struct IniError {
    pub file: PathBuf,
    pub line: usize,
    pub msg: String,
}

impl Ini {
    pub fn section(&self, name: &str) -> Option<&IniSection> {
        self.index.get(name).map(|&i| &self.sections[i])
    }

    /// Parse `text` (the contents of `file`) into this parser, merging sections.
    pub fn read_str(&mut self, text: &str, file: &Path) -> Result<(), IniError> {
        let err = |line: usize, msg: String| IniError {
            file: file.to_path_buf(),
            line,
            msg,
        };
        // (section index, entry index, indent of the option line) of the value being built.
        let mut current_section: Option<usize> = None;
        let mut current_entry: Option<(usize, usize, usize)> = None;
        // Blank lines inside a value are kept only if more continuation follows.
        let mut pending_blank = 0usize;
        for (i, raw) in text.lines().enumerate() {
            let lineno = i + 1;
            let stripped = raw.trim();
            if stripped.starts_with('#') || stripped.starts_with(';') {
                continue;
            }
            let value = strip_inline_comment(raw);
            let content = value.trim();
            if content.is_empty() {
                if current_entry.is_some() {
                    pending_blank += 1;
                }
                continue;
            }
            let indent = raw.len() - raw.trim_start().len();
            if let Some((s, e, opt_indent)) = current_entry {
                if indent > opt_indent {
                    let entry = &mut self.sections[s].entries[e];
                    for _ in 0..pending_blank {
                        entry.value.push('\n');
                    }
                    pending_blank = 0;
                    if !entry.value.is_empty() {
                        entry.value.push('\n');
                    }
                    entry.value.push_str(content);
                    continue;
                }
            }
            pending_blank = 0;
            current_entry = None;
            if let Some(header) = section_header(content) {
                current_section = Some(self.open_section(header, file, lineno)?);
                continue;
            }
            if content.starts_with('[') {
                // Python would take `[program:x` + `=...` as an option named "[program";
                // it is a broken header, and silently ignoring it hides a whole program.
                return Err(err(
                    lineno,
                    format!("a section header without its closing `]`: {content:?}"),
                ));
            }
            let Some(s) = current_section else {
                return Err(err(
                    lineno,
                    format!("a line before the first [section] header: {content:?}"),
                ));
            };
            let Some(at) = content.find(['=', ':']) else {
                return Err(err(
                    lineno,
                    format!("expected `key = value` or a [section] header, got {content:?}"),
                ));
            };
            let key = content[..at].trim().to_lowercase();
            if key.is_empty() {
                return Err(err(
                    lineno,
                    format!("an option without a name: {content:?}"),
                ));
            }
            let entries = &mut self.sections[s].entries;
            entries.push(Entry {
                key,
                value: content[at + 1..].trim().to_string(),
                file: file.to_path_buf(),
                line: lineno,
            });
            current_entry = Some((s, entries.len() - 1, indent));
        }
        Ok(())
    }

    fn open_section(&mut self, name: &str, file: &Path, line: usize) -> Result<usize, IniError> {
        if let Some(&i) = self.index.get(name) {
            let first = &self.sections[i];
            if name.starts_with("program:") {
                // supervisord merges the two silently across files (and refuses them within
                // one): either way one program's settings vanish without a word.
                return Err(IniError {
                    file: file.to_path_buf(),
                    line,
                    msg: format!(
                        "[{name}] is defined twice: in {}:{} and here (rename or remove one)",
                        first.file.display(),
                        first.line
                    ),
                });
            }
            return Ok(i);
        }
        self.index.insert(name.to_string(), self.sections.len());
        self.sections.push(IniSection {
            name: name.to_string(),
            file: file.to_path_buf(),
            line,
            entries: Vec::new(),
        });
        Ok(self.sections.len() - 1)
    }
}

/// `[name]` → `name` (Python's `\[(?P<header>.+)\]`, anchored at the start).
fn section_header(content: &str) -> Option<&str> {
    let rest = content.strip_prefix('[')?;
    let end = rest.rfind(']')?;
    (end > 0).then(|| &rest[..end])
}

/// Cut an inline `;` or `#` comment: only when preceded by whitespace (Python 3 rules).
fn strip_inline_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if (b == b';' || b == b'#') && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return &line[..i];
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Ini, IniError> {
        let mut ini = Ini::default();
        ini.read_str(text, Path::new("/x.conf"))?;
        Ok(ini)
    }

    #[test]
    fn comments_continuations_and_keys() {
        let ini = parse(
            "; top\n[program:a]\nCommand = /bin/a ; inline\nenvironment=\n    A=\"1\",\n\n    B=2\n# c\nx: y#not-comment\n",
        )
        .unwrap();
        let s = ini.section("program:a").unwrap();
        assert_eq!(s.get("command").unwrap().value, "/bin/a");
        assert_eq!(s.get("environment").unwrap().value, "A=\"1\",\n\nB=2");
        assert_eq!(s.get("environment").unwrap().line, 4);
        assert_eq!(s.get("x").unwrap().value, "y#not-comment");
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("key=1\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse("[a]\nb=1\nnot an option\n").unwrap_err();
        assert_eq!((e.line, e.file.as_path()), (3, Path::new("/x.conf")));
        assert!(e.to_string().starts_with("/x.conf:3: "), "{e}");
    }

    #[test]
    fn duplicate_sections_merge_and_later_values_win() {
        let ini = parse("[a]\nx=1\n[b]\n[a]\nx=2\n").unwrap();
        assert_eq!(ini.sections.len(), 2);
        assert_eq!(ini.section("a").unwrap().get("x").unwrap().value, "2");
    }

    #[test]
    fn a_program_defined_in_two_files_is_an_error_naming_both() {
        let mut ini = Ini::default();
        ini.read_str(
            "[program:web]\ncommand=a\n",
            Path::new("/etc/supervisord.d/a.conf"),
        )
        .unwrap();
        let e = ini
            .read_str(
                "\n[program:web]\ncommand=b\n",
                Path::new("/etc/supervisord.d/b.conf"),
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/supervisord.d/b.conf:2: [program:web] is defined twice: in /etc/supervisord.d/a.conf:1 and here (rename or remove one)"
        );
        let e = parse("[program:x]\ncommand=a\n[program:x]\n").unwrap_err();
        assert_eq!(e.line, 3);
    }
}
