//! Text-level edits of a YAML document that keep every untouched byte: the import-resolver
//! rules, a plain scalar setting and a quoted secret. Pure functions from text to text; the
//! file handling lives in the parent module.
//!
//! Editing goes through `yaml-edit` (a lossless rowan tree), so comments, blank lines, key
//! order, quoting and indentation of everything not edited stay as they were. Reading values
//! and the final check go through `serde_norway` (libyaml): a second, strict parser gives the
//! line and column of syntax errors and confirms the result means exactly what we intended.

use std::str::FromStr;

use serde_norway::{Mapping, Value};
use yaml_edit::{Document, YamlFile};

/// One import-resolver rule: imports whose URL starts with `prefix` are read from
/// `target_url` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub prefix: String,
    pub target_url: String,
}

/// What went wrong while editing, without any file name (the caller adds it). Messages never
/// contain values from the document (it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("{line}:{col}: not valid YAML: {msg}")]
    Parse {
        line: usize,
        col: usize,
        msg: String,
    },
    #[error("{0}")]
    Layout(String),
    #[error("the edited text did not check out: {0}")]
    Verify(String),
}

/// How the items of an existing rules list are written, so that new items look the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    Single,
    Double,
    Plain,
}

/// Parse `text` strictly; errors carry line and column.
pub fn parse_strict(text: &str) -> Result<Value, EditError> {
    serde_norway::from_str::<Value>(text).map_err(|e| {
        let (line, col) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let mut msg = e.to_string();
        if let Some(i) = msg.find(" at line ") {
            msg.truncate(i);
        }
        EditError::Parse { line, col, msg }
    })
}

/// Load `text` into the lossless editor, refusing when it would not give the same bytes back
/// (then nothing we write could be trusted to keep the rest of the file). The whole stream
/// is kept (comments before `---` included); edits go to its single document.
fn lossless(text: &str) -> Result<(YamlFile, Document), EditError> {
    let file = YamlFile::from_str(text)
        .map_err(|e| EditError::Layout(format!("the YAML editor cannot load it ({e})")))?;
    if file.to_string() != text {
        return Err(EditError::Layout(
            "the YAML editor cannot reproduce it byte for byte; refusing to edit".into(),
        ));
    }
    let mut docs = file.documents();
    match (docs.next(), docs.next()) {
        (Some(doc), None) => Ok((file, doc)),
        _ => Err(EditError::Layout(
            "expected exactly one YAML document".into(),
        )),
    }
}

/// The rules that would be kept/added by [`apply_rules`], computed on parsed values:
/// `rules` first in order, then every existing item whose prefix is not one of ours.
/// Returns `None` when `current` already is that list (nothing to do).
fn desired_rules(current: &[Value], rules: &[Rule]) -> Option<Vec<Value>> {
    let ours: Vec<Value> = rules.iter().map(rule_value).collect();
    let others = current.iter().filter(|v| match rule_prefix(v) {
        Some(p) => !rules.iter().any(|r| r.prefix == p),
        None => true,
    });
    let want: Vec<Value> = ours.iter().cloned().chain(others.cloned()).collect();
    (want != current).then_some(want)
}

fn rule_value(rule: &Rule) -> Value {
    let mut m = Mapping::new();
    m.insert(
        Value::String(rule.prefix.clone()),
        Value::String(rule.target_url.clone()),
    );
    Value::Mapping(m)
}

/// The prefix of a rule item (a mapping of one string key), if it is one.
fn rule_prefix(item: &Value) -> Option<&str> {
    match item {
        Value::Mapping(m) if m.len() == 1 => m.keys().next()?.as_str(),
        _ => None,
    }
}

/// Walk `path` through nested mappings of a parsed document.
fn lookup<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(root, |v, k| v.as_mapping()?.get(k.as_str()))
}

fn lookup_mut<'a>(root: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter()
        .try_fold(root, |v, k| v.as_mapping_mut()?.get_mut(k.as_str()))
}

/// Put `rules` first in the sequence at `path` (e.g. provider_context → import_resolver →
/// parameters → rules): a rule already there in its place is left alone, an item with the
/// same prefix elsewhere (or with another target) is replaced. Returns `None` when the
/// text already has them (patching twice equals patching once).
pub fn apply_rules(
    text: &str,
    path: &[String],
    rules: &[Rule],
) -> Result<Option<String>, EditError> {
    let before = parse_strict(text)?;
    let where_ = path.join(".");
    let current = match lookup(&before, path) {
        Some(Value::Sequence(items)) => items.clone(),
        Some(Value::Null) | None => {
            return Err(EditError::Layout(format!(
                "no import-resolver rules list at `{where_}` (set patch.rules_path to where this release keeps it)"
            )))
        }
        Some(_) => {
            return Err(EditError::Layout(format!(
                "`{where_}` is not a list (it must be a YAML sequence of {{prefix: target}} items)"
            )))
        }
    };
    let Some(want) = desired_rules(&current, rules) else {
        return Ok(None);
    };

    let (file, doc) = lossless(text)?;
    let seq = editor_sequence(&doc, path, &where_)?;
    if seq.len() != current.len() {
        return Err(EditError::Layout(format!(
            "the two YAML parsers disagree on the length of `{where_}`; refusing to edit"
        )));
    }
    let style = item_style(text, &seq);
    // Keep the longest run of items that already are our rules in order; drop our
    // prefixes from the rest; insert the missing rules after the kept run.
    let kept = current
        .iter()
        .zip(rules)
        .take_while(|(item, rule)| **item == rule_value(rule))
        .count();
    for i in (kept..current.len()).rev() {
        if rule_prefix(&current[i]).is_some_and(|p| rules.iter().any(|r| r.prefix == p)) {
            seq.remove(i);
        }
    }
    for (i, rule) in rules.iter().enumerate().skip(kept) {
        let item = Document::from_str(&render_rule(rule, style))
            .map_err(|e| EditError::Verify(format!("rendered rule does not parse ({e})")))?;
        let node = item
            .as_mapping()
            .ok_or_else(|| EditError::Verify("rendered rule is not a mapping".into()))?;
        seq.insert(i, node);
    }
    let out = file.to_string();

    let mut expected = before;
    *lookup_mut(&mut expected, path).expect("looked up above") = Value::Sequence(want);
    verify(&out, &expected)?;
    Ok(Some(out))
}

/// The editor's view of the sequence at `path`.
fn editor_sequence(
    doc: &Document,
    path: &[String],
    where_: &str,
) -> Result<yaml_edit::Sequence, EditError> {
    let missing = || EditError::Layout(format!("cannot edit `{where_}` (unexpected layout)"));
    let (last, parents) = path.split_last().ok_or_else(missing)?;
    let mut map = doc.as_mapping().ok_or_else(missing)?;
    for key in parents {
        map = map.get_mapping(key.as_str()).ok_or_else(missing)?;
    }
    map.get_sequence(last.as_str()).ok_or_else(missing)
}

/// How the items of a list are written: quoting of the key, and flow (`{k: v}`) or block
/// (`k: v`) mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Style {
    quote: Quote,
    flow: bool,
}

/// The style of the first item of the existing list (default: single-quoted flow mappings,
/// as the 4.x releases and the legacy image wrote them).
fn item_style(text: &str, seq: &yaml_edit::Sequence) -> Style {
    let Some(first) = seq.first() else {
        return Style {
            quote: Quote::Single,
            flow: true,
        };
    };
    let range = first.byte_range();
    let item = text[range.start as usize..range.end as usize].trim_start();
    let quote = match item.trim_start_matches(['{', ' ']).chars().next() {
        Some('\'') => Quote::Single,
        Some('"') => Quote::Double,
        Some(_) => Quote::Plain,
        None => Quote::Single,
    };
    Style {
        quote,
        flow: item.starts_with('{') || !first.is_mapping(),
    }
}

/// A rule as a one-line mapping in `style`. A plain scalar is used only when it reads back
/// as the same string; otherwise single quotes.
fn render_rule(rule: &Rule, style: Style) -> String {
    let (open, close) = if style.flow { ("{", "}") } else { ("", "") };
    let quoted = |s: &str| match style.quote {
        Quote::Double => double_quoted(s),
        Quote::Single | Quote::Plain => single_quoted(s),
    };
    if style.quote == Quote::Plain {
        let plain = format!("{open}{}: {}{close}", rule.prefix, rule.target_url);
        if parse_strict(&plain).ok() == Some(rule_value(rule)) {
            return plain;
        }
    }
    format!(
        "{open}{}: {}{close}",
        quoted(&rule.prefix),
        quoted(&rule.target_url)
    )
}

/// A single-quoted YAML scalar (only `'` needs escaping, by doubling). Callers use it for
/// one-line text; [`double_quoted`] handles anything.
fn single_quoted(s: &str) -> String {
    if s.chars().any(needs_escape) {
        return double_quoted(s);
    }
    format!("'{}'", s.replace('\'', "''"))
}

/// A double-quoted YAML scalar that reads back as exactly `s` in YAML 1.1 and 1.2 parsers.
///
/// Written by hand because no serializer in our dependencies lets us choose the style:
/// serde_norway (libyaml) picks a block literal for multi-line strings, which cannot hold
/// every string (trailing spaces on the last line, a leading space, a lone `\r`) and spreads
/// a secret over several lines. Escaping is the YAML spec's: `\\`, `\"`, and `\uXXXX` for
/// every character that is not printable or that a 1.1 parser treats as a line break
/// (NEL, LS, PS) or strips (BOM).
pub fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let n = c as u32;
                if n <= 0xFFFF {
                    out.push_str(&format!("\\u{n:04X}"));
                } else {
                    out.push_str(&format!("\\U{n:08X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Characters that must not appear raw inside a quoted scalar.
fn needs_escape(c: char) -> bool {
    let n = c as u32;
    n < 0x20
        || (0x7F..=0x9F).contains(&n)
        || matches!(n, 0x2028 | 0x2029 | 0xFEFF | 0xFFFE | 0xFFFF)
        || (0xD800..=0xDFFF).contains(&n)
}

/// Set the scalar at `path` (creating missing mappings and the key) to `value`, rendered
/// by the caller as YAML scalar text (`raw`). Returns `None` when it already has that value.
/// The value is compared, never printed.
pub fn set_scalar(
    text: &str,
    path: &[String],
    value: &str,
    raw: &str,
) -> Result<Option<String>, EditError> {
    let before = parse_strict(text)?;
    let where_ = path.join(".");
    let current = lookup(&before, path);
    if current.and_then(Value::as_str) == Some(value) {
        return Ok(None);
    }
    if matches!(current, Some(Value::Mapping(_) | Value::Sequence(_))) {
        return Err(EditError::Layout(format!(
            "`{where_}` holds a mapping or list, not a value; refusing to replace it"
        )));
    }
    let (last, parents) = path
        .split_last()
        .ok_or_else(|| EditError::Layout("empty key path".into()))?;
    let mut expected = before.clone();
    let mut at = &mut expected;
    for key in parents {
        let map = at.as_mapping_mut().ok_or_else(|| {
            EditError::Layout(format!(
                "cannot set `{where_}`: `{key}`'s parent is not a mapping"
            ))
        })?;
        if !map.contains_key(key.as_str()) {
            map.insert(Value::String(key.clone()), Value::Mapping(Mapping::new()));
        }
        at = map.get_mut(key.as_str()).expect("inserted above");
    }
    at.as_mapping_mut()
        .ok_or_else(|| {
            EditError::Layout(format!("cannot set `{where_}`: parent is not a mapping"))
        })?
        .insert(Value::String(last.clone()), Value::String(value.to_owned()));

    let (file, doc) = lossless(text)?;
    let mut map = doc
        .as_mapping()
        .ok_or_else(|| EditError::Layout("the document is not a mapping".into()))?;
    for key in parents {
        map = match map.get_mapping(key.as_str()) {
            Some(m) => m,
            None => map.entry(key.as_str()).or_insert_mapping(),
        };
    }
    let scalar = Document::from_str(raw)
        .ok()
        .and_then(|d| d.as_scalar())
        .ok_or_else(|| EditError::Verify("rendered value is not a scalar".into()))?;
    map.set(last.as_str(), scalar);
    let out = file.to_string();
    verify(&out, &expected)?;
    Ok(Some(out))
}

/// The edited text must parse and mean exactly `expected` (the original document with just
/// our change). The message never shows values.
fn verify(out: &str, expected: &Value) -> Result<(), EditError> {
    let got =
        parse_strict(out).map_err(|e| EditError::Verify(format!("result does not parse ({e})")))?;
    if &got != expected {
        return Err(EditError::Verify(
            "result differs from the intended change elsewhere".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> Vec<String> {
        ["a", "rules"].iter().map(|s| s.to_string()).collect()
    }

    fn rule(p: &str, t: &str) -> Rule {
        Rule {
            prefix: p.into(),
            target_url: t.into(),
        }
    }

    #[test]
    fn plain_list_gets_plain_item_at_top() {
        let text = "a:\n  rules:\n  - {http://x/spec: file:///s}\n  # tail\nb: 1\n";
        let out = apply_rules(text, &path(), &[rule("http://o/r", "file:///o")])
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            "a:\n  rules:\n  - {http://o/r: file:///o}\n  - {http://x/spec: file:///s}\n  # tail\nb: 1\n"
        );
        assert_eq!(
            apply_rules(&out, &path(), &[rule("http://o/r", "file:///o")]).unwrap(),
            None
        );
    }

    #[test]
    fn changed_target_replaces_the_item() {
        let text =
            "a:\n  rules:\n    - {'http://o/r': 'file:///old'}\n    - {'http://x': 'file:///s'}\n";
        let out = apply_rules(text, &path(), &[rule("http://o/r", "file:///new")])
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            "a:\n  rules:\n    - {'http://o/r': 'file:///new'}\n    - {'http://x': 'file:///s'}\n"
        );
    }

    #[test]
    fn rule_further_down_moves_to_the_top() {
        let text =
            "a:\n  rules:\n  - {\"http://x\": \"file:///s\"}\n  - {\"http://o\": \"file:///o\"}\n";
        let out = apply_rules(text, &path(), &[rule("http://o", "file:///o")])
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            "a:\n  rules:\n  - {\"http://o\": \"file:///o\"}\n  - {\"http://x\": \"file:///s\"}\n"
        );
    }

    #[test]
    fn plain_style_falls_back_to_quotes_when_needed() {
        let r = rule("http://x/a,b", "file:///s #x");
        let text = render_rule(
            &r,
            Style {
                quote: Quote::Plain,
                flow: true,
            },
        );
        assert_eq!(text, "{'http://x/a,b': 'file:///s #x'}");
        assert_eq!(parse_strict(&text).unwrap(), rule_value(&r));
    }

    #[test]
    fn rules_not_a_list_is_a_layout_error() {
        let err =
            apply_rules("a:\n  rules: nope\n", &path(), &[rule("p", "file:///t")]).unwrap_err();
        assert!(err.to_string().contains("`a.rules` is not a list"), "{err}");
        let err = apply_rules("a: {}\n", &path(), &[rule("p", "file:///t")]).unwrap_err();
        assert!(
            err.to_string().contains("no import-resolver rules list"),
            "{err}"
        );
    }

    #[test]
    fn parse_error_has_line_and_column() {
        let err = apply_rules("a:\n  rules: [\n b: }\n", &path(), &[]).unwrap_err();
        match err {
            EditError::Parse { line, .. } => assert!(line >= 2, "{err}"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn double_quoted_escapes_every_hazard() {
        for s in [
            "",
            "'",
            "\"",
            "\\",
            "a # b",
            "k: v",
            "\n",
            " lead",
            "trail ",
            "\r\n",
            "\u{85}",
            "\u{2028}",
            "\u{feff}x",
            "\u{7f}",
            "\u{1F600}",
            "ünï",
            "\t",
            "\0",
        ] {
            let yaml = format!("k: {}\n", double_quoted(s));
            let v: Value = serde_norway::from_str(&yaml).unwrap();
            assert_eq!(v["k"].as_str(), Some(s), "{yaml:?}");
        }
    }

    #[test]
    fn set_scalar_replaces_value_and_keeps_comment() {
        let text = "m:\n  s:\n    # the password\n    pw: '' # inline\n  x: 1\n";
        let p: Vec<String> = ["m", "s", "pw"].iter().map(|s| s.to_string()).collect();
        let out = set_scalar(text, &p, "a\"b", &double_quoted("a\"b"))
            .unwrap()
            .unwrap();
        assert!(
            out.starts_with("m:\n  s:\n    # the password\n    pw: \"a\\\"b\""),
            "{out}"
        );
        assert!(out.ends_with("  x: 1\n"), "{out}");
        assert_eq!(
            set_scalar(&out, &p, "a\"b", &double_quoted("a\"b")).unwrap(),
            None
        );
    }

    #[test]
    fn set_scalar_creates_missing_parents() {
        let p: Vec<String> = ["m", "s", "pw"].iter().map(|s| s.to_string()).collect();
        let out = set_scalar("x: 1\n", &p, "v", "v").unwrap().unwrap();
        let v = parse_strict(&out).unwrap();
        assert_eq!(v["m"]["s"]["pw"].as_str(), Some("v"));
        assert_eq!(v["x"].as_i64(), Some(1));
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    fn path() -> Vec<String> {
        ["pc", "ir", "parameters", "rules"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    const RULES: &[(&str, &str)] = &[
        ("https://o.example/r/R6", "file:///opt/o"),
        ("https://o.example/c", "file:///opt/o"),
    ];

    fn rules() -> Vec<Rule> {
        RULES
            .iter()
            .map(|(p, t)| Rule {
                prefix: p.to_string(),
                target_url: t.to_string(),
            })
            .collect()
    }

    /// Layouts other releases or hand edits could have; each must come out with the rules
    /// first (checked by `apply_rules` itself), stable on a second run.
    #[test]
    fn other_layouts_are_edited_correctly() {
        let layouts = [
            // block-mapping items
            "pc:\n  ir:\n    parameters:\n      rules:\n        - 'http://x/spec': 'file:///s'\n",
            // block-mapping items, plain
            "pc:\n  ir:\n    parameters:\n      rules:\n      - http://x/spec: file:///s\n",
            // four-space indentation, double quotes, comments around
            "# head\n---\npc:\n    ir:\n        parameters:\n            # before\n            rules:\n                - {\"http://x\": \"file:///s\"}  # tail\n            fallback: true\n",
            // flow sequence
            "pc:\n  ir:\n    parameters:\n      rules: [{http://x: file:///s}]\n",
            // empty flow sequence
            "pc:\n  ir:\n    parameters:\n      rules: []\n      fallback: true\n",
            // no trailing newline
            "pc:\n  ir:\n    parameters:\n      rules:\n      - {http://x: file:///s}",
        ];
        for (i, text) in layouts.iter().enumerate() {
            let once = apply_rules(text, &path(), &rules())
                .unwrap_or_else(|e| panic!("layout {i}: {e}"))
                .unwrap_or_else(|| panic!("layout {i}: no change"));
            let v = parse_strict(&once).unwrap();
            let got = lookup(&v, &path()).unwrap().as_sequence().unwrap();
            for (j, r) in rules().iter().enumerate() {
                assert_eq!(got[j], rule_value(r), "layout {i}:\n{once}");
            }
            assert_eq!(
                apply_rules(&once, &path(), &rules()).unwrap(),
                None,
                "layout {i} twice:\n{once}"
            );
            // Block layouts: only lines were inserted.
            if !text.contains("rules: [") {
                let kept: Vec<&str> = once
                    .lines()
                    .filter(|l| !RULES.iter().any(|(p, _)| l.contains(p)))
                    .collect();
                assert_eq!(
                    kept,
                    text.lines().collect::<Vec<_>>(),
                    "layout {i}:\n{once}"
                );
                // New items are written like the first old one: same indentation, same
                // opening (flow brace or not, quote or not).
                let old = text
                    .lines()
                    .find(|l| l.trim_start().starts_with("- "))
                    .unwrap();
                let new = once.lines().find(|l| l.contains(RULES[0].0)).unwrap();
                let head = |l: &str| l.len() - l.trim_start().len();
                assert_eq!(head(old), head(new), "layout {i}:\n{once}");
                let lead = |l: &str| l.trim_start()[..4].to_string();
                assert_eq!(lead(old), lead(new), "layout {i}:\n{once}");
            }
        }
    }

    /// A rules list shared through an anchor would change its aliases too: refused, as the
    /// check against the intended change catches it.
    #[test]
    fn an_aliased_rules_list_is_refused() {
        let text = "pc:\n  ir:\n    parameters:\n      rules: &r\n      - {http://x: file:///s}\nother: *r\n";
        let err = apply_rules(text, &path(), &rules()).unwrap_err();
        assert!(matches!(err, EditError::Verify(_)), "{err}");
    }
}
