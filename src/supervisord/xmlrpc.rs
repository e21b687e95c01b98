//! The XML-RPC wire format: parsing `methodCall` bodies (with quick-xml) and writing
//! `methodResponse` bodies the way Python's `xmlrpc.client` expects them.
//!
//! The request parser is iterative with hard limits ([`MAX_DEPTH`], [`MAX_ELEMENTS`],
//! [`MAX_PARAMS`]; the body size is capped by the server): any local user of the socket's
//! group can send it anything, and it runs inside PID 1.
//!
//! Why not the `dxr` crate (the maintained XML-RPC implementation; 0.7/0.8 evaluated for
//! issue 14): its `Value` keeps a struct as a `BTreeMap`, so members come back sorted, not
//! in supervisord's order (Python clients print dicts in wire order); `i8` and `nil` are
//! opt-in features and `<int>` is an `i32`; it parses through serde over quick-xml's
//! deserializer, which recurses per nested value and has no depth or element limit, so the
//! 20 000-level request that overflowed PID 1's stack needs the same guard in front of it
//! anyway; and its server half is an axum service, not supervisord's HTTP quirks
//! (`/RPC2` 400s, `logtail`). Speed was not the deciding point and was not compared
//! (benches/supervisord.sh measures this codec's round trip against supervisord's).

use std::fmt::Write as _;

use quick_xml::events::Event;
use quick_xml::Reader;

/// An XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Str(String),
    Double(f64),
    DateTime(String),
    Base64(Vec<u8>),
    Array(Vec<Value>),
    /// Members in order (Python dicts keep insertion order; clients print them so).
    Struct(Vec<(String, Value)>),
    Nil,
}

impl Value {
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }
    pub fn structure<const N: usize>(members: [(&str, Value); N]) -> Value {
        Value::Struct(
            members
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// A struct member by name.
    pub fn member(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(m) => m.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A parsed `methodCall`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    pub params: Vec<Value>,
}

/// Deepest element nesting accepted in a request: `methodCall/params/param/value` plus
/// about 20 levels of arrays or structs (supervisord's deepest call, `system.multicall`
/// of a call with an array parameter, nests 13 elements). The parser's tree and the value
/// reader recurse at most this deep, so no request can exhaust the stack.
pub const MAX_DEPTH: usize = 64;
/// Most elements in one request (a multicall of thousands of calls fits): bounds the
/// memory a request can make the init allocate beyond its body.
pub const MAX_ELEMENTS: usize = 200_000;
/// Most `<param>`s of one call (supervisord's methods take at most three).
pub const MAX_PARAMS: usize = 32;

/// Why a request body is not a call this server answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not an XML-RPC `methodCall` (answered with HTTP 400, as supervisord does).
    #[error("invalid XML-RPC request: {0}")]
    Malformed(String),
    /// Well-formed so far but past one of this module's limits (answered with an
    /// `INCORRECT_PARAMETERS` fault naming the limit).
    #[error("{0}")]
    Limit(String),
}

fn malformed(e: impl std::fmt::Display) -> ParseError {
    ParseError::Malformed(e.to_string())
}

/// A minimal element tree: enough for XML-RPC, which has no attributes or mixed content.
#[derive(Debug, Default)]
struct Node {
    name: String,
    text: String,
    children: Vec<Node>,
}

/// The element tree of `body`, built with an explicit stack (no recursion), refusing
/// more than [`MAX_DEPTH`] levels or [`MAX_ELEMENTS`] elements.
fn tree(body: &[u8]) -> Result<Node, ParseError> {
    let mut reader = Reader::from_reader(body);
    let mut stack: Vec<Node> = vec![Node::default()];
    let mut buf = Vec::new();
    let err = |e: &dyn std::fmt::Display| malformed(e);
    let mut elements = 0usize;
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| err(&e))?;
        if matches!(event, Event::Start(_) | Event::Empty(_)) {
            elements += 1;
            if elements > MAX_ELEMENTS {
                return Err(ParseError::Limit(format!(
                    "request has more than {MAX_ELEMENTS} elements"
                )));
            }
        }
        match event {
            Event::Start(s) => {
                if stack.len() > MAX_DEPTH {
                    return Err(ParseError::Limit(format!(
                        "request nests elements more than {MAX_DEPTH} deep"
                    )));
                }
                stack.push(Node {
                    name: String::from_utf8_lossy(s.name().as_ref()).into_owned(),
                    ..Node::default()
                })
            }
            Event::Empty(s) => {
                let node = Node {
                    name: String::from_utf8_lossy(s.name().as_ref()).into_owned(),
                    ..Node::default()
                };
                stack.last_mut().expect("root").children.push(node);
            }
            Event::End(_) => {
                let node = stack.pop().expect("balanced by quick-xml");
                let parent = stack.last_mut().ok_or_else(|| err(&"unbalanced tags"))?;
                parent.children.push(node);
            }
            Event::Text(t) => {
                let s = t.unescape().map_err(|e| err(&e))?;
                stack.last_mut().expect("root").text.push_str(&s);
            }
            Event::CData(c) => {
                let s = String::from_utf8_lossy(&c).into_owned();
                stack.last_mut().expect("root").text.push_str(&s);
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if stack.len() != 1 {
        return Err(err(&"unclosed element"));
    }
    Ok(stack.pop().expect("root"))
}

/// Parse a `methodCall` request body.
pub fn parse_call(body: &[u8]) -> Result<Call, ParseError> {
    let root = tree(body)?;
    let call = root
        .children
        .iter()
        .find(|n| n.name == "methodCall")
        .ok_or_else(|| malformed("no <methodCall>"))?;
    let method = call
        .children
        .iter()
        .find(|n| n.name == "methodName")
        .map(|n| n.text.trim().to_string())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| malformed("no method name"))?;
    let mut params = Vec::new();
    if let Some(ps) = call.children.iter().find(|n| n.name == "params") {
        for p in ps.children.iter().filter(|n| n.name == "param") {
            if params.len() == MAX_PARAMS {
                return Err(ParseError::Limit(format!(
                    "call has more than {MAX_PARAMS} parameters"
                )));
            }
            let v = p
                .children
                .iter()
                .find(|n| n.name == "value")
                .ok_or_else(|| malformed("<param> without <value>"))?;
            params.push(value(v)?);
        }
    }
    Ok(Call { method, params })
}

fn value(v: &Node) -> Result<Value, ParseError> {
    let Some(typed) = v.children.first() else {
        return Ok(Value::Str(v.text.clone())); // untyped value: a string
    };
    let bad = |what: &str| malformed(format!("bad <{}>: {what}", typed.name));
    let t = typed.text.trim();
    Ok(match typed.name.as_str() {
        "int" | "i4" | "i8" => Value::Int(t.parse().map_err(|_| bad(t))?),
        "boolean" => Value::Bool(match t {
            "1" => true,
            "0" => false,
            _ => return Err(bad(t)),
        }),
        "string" => Value::Str(typed.text.clone()),
        "double" => Value::Double(t.parse().map_err(|_| bad(t))?),
        "dateTime.iso8601" => Value::DateTime(t.to_string()),
        "base64" => {
            use base64::Engine;
            let clean: String = t.split_whitespace().collect();
            Value::Base64(
                base64::engine::general_purpose::STANDARD
                    .decode(clean)
                    .map_err(|e| bad(&e.to_string()))?,
            )
        }
        "nil" => Value::Nil,
        "array" => {
            let data = typed.children.iter().find(|n| n.name == "data");
            let items = data.map(|d| d.children.as_slice()).unwrap_or(&[]);
            Value::Array(
                items
                    .iter()
                    .filter(|n| n.name == "value")
                    .map(value)
                    .collect::<Result<_, _>>()?,
            )
        }
        "struct" => {
            let mut members = Vec::new();
            for m in typed.children.iter().filter(|n| n.name == "member") {
                let name = m.children.iter().find(|n| n.name == "name");
                let val = m.children.iter().find(|n| n.name == "value");
                let (Some(name), Some(val)) = (name, val) else {
                    return Err(bad("<member> needs <name> and <value>"));
                };
                members.push((name.text.clone(), value(val)?));
            }
            Value::Struct(members)
        }
        other => return Err(malformed(format!("unknown value type <{other}>"))),
    })
}

/// A successful `methodResponse`.
pub fn response(v: &Value) -> String {
    let mut out = String::from("<?xml version='1.0'?>\n<methodResponse><params><param>");
    write_value(&mut out, v);
    out.push_str("</param></params></methodResponse>\n");
    out
}

/// A fault `methodResponse`.
pub fn fault(code: i32, text: &str) -> String {
    let mut out = String::from("<?xml version='1.0'?>\n<methodResponse><fault>");
    write_value(
        &mut out,
        &Value::structure([
            ("faultCode", Value::Int(code.into())),
            ("faultString", Value::str(text)),
        ]),
    );
    out.push_str("</fault></methodResponse>\n");
    out
}

/// Written without the newlines xmlrpc.client puts between elements: a client's XML parser
/// then makes one callback less per element (about 17 % of Python's parse time for
/// `getAllProcessInfo`), and no XML-RPC reader depends on them.
fn write_value(out: &mut String, v: &Value) {
    out.push_str("<value>");
    match v {
        Value::Int(i) => {
            let _ = write!(out, "<int>{i}</int>");
        }
        Value::Bool(b) => out.push_str(if *b {
            "<boolean>1</boolean>"
        } else {
            "<boolean>0</boolean>"
        }),
        Value::Str(s) => {
            out.push_str("<string>");
            escape_into(out, s);
            out.push_str("</string>");
        }
        Value::Double(d) => {
            let _ = write!(out, "<double>{d:?}</double>");
        }
        Value::DateTime(s) => {
            out.push_str("<dateTime.iso8601>");
            escape_into(out, s);
            out.push_str("</dateTime.iso8601>");
        }
        Value::Base64(b) => {
            use base64::Engine;
            out.push_str("<base64>");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(b));
            out.push_str("</base64>");
        }
        Value::Array(items) => {
            out.push_str("<array><data>");
            for i in items {
                write_value(out, i);
            }
            out.push_str("</data></array>");
        }
        Value::Struct(members) => {
            out.push_str("<struct>");
            for (k, v) in members {
                out.push_str("<member><name>");
                escape_into(out, k);
                out.push_str("</name>");
                write_value(out, v);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
        Value::Nil => out.push_str("<nil/>"),
    }
    out.push_str("</value>");
}

/// Escape like xmlrpc.client, and replace characters XML 1.0 cannot carry (control bytes
/// in a program's output would otherwise make the client's parser fail).
/// Runs of plain text are copied whole (this writes every string of every answer).
fn escape_into(out: &mut String, s: &str) {
    let mut rest = s;
    while let Some(i) = rest.find(needs_escape) {
        out.push_str(&rest[..i]);
        let c = rest[i..].chars().next().expect("found at a char boundary");
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push('\u{FFFD}'),
        }
        rest = &rest[i + c.len_utf8()..];
    }
    out.push_str(rest);
}

fn needs_escape(c: char) -> bool {
    matches!(c, '&' | '<' | '>' | '\u{FFFE}' | '\u{FFFF}')
        || ((c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_python_calls() {
        let body = br#"<?xml version='1.0'?>
<methodCall>
<methodName>supervisor.tailProcessStdoutLog</methodName>
<params>
<param><value><string>web &amp; co</string></value></param>
<param><value><int>-100</int></value></param>
<param><value>bare</value></param>
<param><value><boolean>1</boolean></value></param>
<param><value><array><data><value><struct><member><name>methodName</name><value><string>x</string></value></member></struct></value></data></array></value></param>
<param><value><string></string></value></param>
</params>
</methodCall>"#;
        let call = parse_call(body).unwrap();
        assert_eq!(call.method, "supervisor.tailProcessStdoutLog");
        assert_eq!(call.params[0], Value::str("web & co"));
        assert_eq!(call.params[1], Value::Int(-100));
        assert_eq!(call.params[2], Value::str("bare"));
        assert_eq!(call.params[3], Value::Bool(true));
        let Value::Array(a) = &call.params[4] else {
            panic!("not an array")
        };
        assert_eq!(a[0].member("methodName"), Some(&Value::str("x")));
        assert_eq!(call.params[5], Value::str(""));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_call(b"<methodCall><params/></methodCall>").is_err());
        assert!(parse_call(b"not xml at all").is_err());
        assert!(parse_call(b"<methodCall><methodName>a</methodName><params><param><value><int>x</int></value></param></params></methodCall>").is_err());
        assert!(parse_call(b"<methodCall><methodName>a</methodName>").is_err());
    }

    /// `depth` arrays nested in the one parameter of a call.
    fn nested(depth: usize) -> Vec<u8> {
        let mut b = String::from("<methodCall><methodName>m</methodName><params><param>");
        b.push_str(&"<value><array><data>".repeat(depth));
        b.push_str(&"</data></array></value>".repeat(depth));
        b.push_str("</param></params></methodCall>");
        b.into_bytes()
    }

    #[test]
    fn deep_nesting_is_refused_not_followed() {
        // 20 levels parse (deeper than any supervisord call) ...
        let mut v = &parse_call(&nested(20)).unwrap().params[0];
        for _ in 0..19 {
            let Value::Array(a) = v else {
                panic!("not an array")
            };
            v = &a[0];
        }
        // ... the 860 KB, 20 000-level request of issue 14 is a limit error, not a crash.
        let deep = nested(20_000);
        assert!(deep.len() > 800_000);
        let e = parse_call(&deep).unwrap_err();
        assert!(matches!(e, ParseError::Limit(_)), "{e}");
        assert!(e.to_string().contains("64 deep"), "{e}");
        // Unclosed nesting is refused the same way, before the end of the body.
        let open = "<value><array><data>".repeat(100_000);
        assert!(matches!(
            parse_call(open.as_bytes()),
            Err(ParseError::Limit(_))
        ));
    }

    #[test]
    fn element_and_parameter_counts_are_bounded() {
        let params = |n: usize| {
            format!(
                "<methodCall><methodName>m</methodName><params>{}</params></methodCall>",
                "<param><value><int>1</int></value></param>".repeat(n)
            )
        };
        assert_eq!(
            parse_call(params(MAX_PARAMS).as_bytes())
                .unwrap()
                .params
                .len(),
            MAX_PARAMS
        );
        let e = parse_call(params(MAX_PARAMS + 1).as_bytes()).unwrap_err();
        assert!(matches!(e, ParseError::Limit(_)), "{e}");
        let wide = format!(
            "<methodCall><methodName>m</methodName><params><param><value><array><data>{}</data></array></value></param></params></methodCall>",
            "<value/>".repeat(MAX_ELEMENTS)
        );
        let e = parse_call(wide.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("elements"), "{e}");
    }

    #[test]
    fn writes_responses() {
        let r = response(&Value::structure([
            ("name", Value::str("a<b")),
            ("pid", Value::Int(7)),
            ("ok", Value::Bool(false)),
        ]));
        assert!(r.contains("<name>name</name><value><string>a&lt;b</string></value>"));
        assert!(r.contains("<int>7</int>"));
        let f = fault(10, "BAD_NAME: x");
        assert!(f.contains("<fault>") && f.contains("<int>10</int>"));
        // Round trip through our own parser's value reader.
        let call =
            format!(
            "<methodCall><methodName>m</methodName><params><param>{}</param></params></methodCall>",
            r.split("<param>").nth(1).unwrap().split("</param>").next().unwrap()
        );
        let parsed = parse_call(call.as_bytes()).unwrap();
        assert_eq!(parsed.params[0].member("name"), Some(&Value::str("a<b")));
    }

    #[test]
    fn escapes_like_xmlrpc_client_and_replaces_what_xml_cannot_carry() {
        let mut out = String::new();
        escape_into(&mut out, "a&b<c>d\te\nf\rg\u{1}h\u{FFFE}i\u{FFFF}jé€");
        assert_eq!(
            out,
            "a&amp;b&lt;c&gt;d\te\nf\rg\u{FFFD}h\u{FFFD}i\u{FFFD}jé€"
        );
        out.clear();
        escape_into(&mut out, "&");
        assert_eq!(out, "&amp;");
    }
}
