//! A small JSON-schema check of response bodies against the response schemas of the
//! OpenStack OpenAPI descriptions in shared/fixtures. Written by hand because the needed
//! subset is small (`$ref`, type, properties, required, items, enum, additionalProperties,
//! allOf/anyOf/oneOf, patternProperties) and a full validator crate would pull in a large
//! dependency tree for the test build. Not checked: formats, patterns (a key under
//! `patternProperties` is validated against its schema without matching the regex).
//! The generated descriptions never say "nullable", while OpenStack answers `null` for unset
//! optional values (`task_state`, `description`...): null is accepted for optional members.
#![allow(dead_code)]

use serde_json::Value;

pub struct Spec {
    doc: Value,
    name: String,
}

pub const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/openstack-openapi"
);

impl Spec {
    pub fn load(file: &str) -> Spec {
        let path = std::path::Path::new(FIXTURES).join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let doc: Value = serde_norway::from_str(&text).unwrap();
        Spec {
            doc,
            name: file.into(),
        }
    }

    /// The schema of the JSON response `status` of `method path` (path as in the spec).
    pub fn response_schema(&self, path: &str, method: &str, status: u16) -> Value {
        let op = &self.doc["paths"][path][method.to_lowercase()];
        assert!(!op.is_null(), "{}: no operation {method} {path}", self.name);
        let resp = &op["responses"][status.to_string()];
        assert!(
            !resp.is_null(),
            "{}: {method} {path} documents no {status}",
            self.name
        );
        resp["content"]["application/json"]["schema"].clone()
    }

    /// Errors of `value` against the response schema (empty when valid).
    pub fn check(&self, path: &str, method: &str, status: u16, value: &Value) -> Vec<String> {
        let schema = self.response_schema(path, method, status);
        let mut errors = Vec::new();
        self.validate(&schema, value, "$", &mut errors, 0);
        errors
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let mut cur = &self.doc;
                for part in r.trim_start_matches("#/").split('/') {
                    cur = &cur[part];
                }
                self.resolve(cur)
            }
            None => schema,
        }
    }

    fn validate(
        &self,
        schema: &Value,
        v: &Value,
        at: &str,
        errors: &mut Vec<String>,
        depth: usize,
    ) {
        if depth > 64 {
            return;
        }
        let schema = self.resolve(schema);
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                self.validate(s, v, at, errors, depth + 1);
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(any) = schema.get(key).and_then(Value::as_array) {
                let ok = any.iter().any(|s| {
                    let mut e = Vec::new();
                    self.validate(s, v, at, &mut e, depth + 1);
                    e.is_empty()
                });
                if !ok {
                    errors.push(format!("{at}: matches none of {key}"));
                }
            }
        }
        if let Some(t) = schema.get("type") {
            let types: Vec<&str> = match t {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let nullable = schema.get("nullable") == Some(&Value::Bool(true));
            let type_matches = types.is_empty() || types.iter().any(|t| type_ok(t, v));
            if !(type_matches || nullable && v.is_null()) {
                errors.push(format!("{at}: {v} is not of type {types:?}"));
                return;
            }
        }
        if let Some(e) = schema.get("enum").and_then(Value::as_array) {
            if !e.contains(v) && !v.is_null() {
                errors.push(format!("{at}: {v} not in enum {e:?}"));
            }
        }
        if let Value::Object(obj) = v {
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !obj.contains_key(r) {
                        errors.push(format!("{at}: missing required `{r}`"));
                    }
                }
            }
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let pattern = schema
                .get("patternProperties")
                .and_then(Value::as_object)
                .and_then(|p| p.values().next());
            for (k, val) in obj {
                let sub = format!("{at}.{k}");
                if val.is_null() && !required.contains(&k.as_str()) {
                    continue;
                }
                match props.and_then(|p| p.get(k)).or(pattern) {
                    Some(s) => self.validate(s, val, &sub, errors, depth + 1),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => errors.push(format!("{sub}: not allowed")),
                        Some(s @ Value::Object(_)) => {
                            self.validate(s, val, &sub, errors, depth + 1)
                        }
                        _ => {}
                    },
                }
            }
        }
        if let (Value::Array(items), Some(s)) = (v, schema.get("items")) {
            for (i, item) in items.iter().enumerate() {
                self.validate(s, item, &format!("{at}[{i}]"), errors, depth + 1);
            }
        }
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

#[test]
fn validator_rejects_what_it_should() {
    let spec = Spec {
        name: "inline".into(),
        doc: serde_json::json!({ "components": { "schemas": { "X": {
            "type": "object", "required": ["id"], "additionalProperties": false,
            "properties": { "id": { "type": "string" }, "n": { "type": ["integer", "null"] },
                "e": { "enum": ["a", "b"] }, "l": { "type": "array", "items": { "type": "boolean" } } } } } } }),
    };
    let schema = serde_json::json!({ "$ref": "#/components/schemas/X" });
    let check = |v: Value| {
        let mut e = Vec::new();
        spec.validate(&schema, &v, "$", &mut e, 0);
        e
    };
    assert!(check(serde_json::json!({ "id": "x", "n": null, "e": "a", "l": [true] })).is_empty());
    assert_eq!(check(serde_json::json!({ "n": 1 })).len(), 1, "missing id");
    assert_eq!(check(serde_json::json!({ "id": 1 })).len(), 1, "wrong type");
    assert_eq!(
        check(serde_json::json!({ "id": "x", "zz": 1 })).len(),
        1,
        "extra property"
    );
    assert_eq!(
        check(serde_json::json!({ "id": "x", "e": "c" })).len(),
        1,
        "enum"
    );
    assert_eq!(
        check(serde_json::json!({ "id": "x", "l": [1] })).len(),
        1,
        "items"
    );
}
