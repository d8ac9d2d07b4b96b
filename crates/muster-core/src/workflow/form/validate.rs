//! Checking one page's input against its fields, with pydantic's errors: an unknown or a
//! missing field, a value of the wrong type or out of its bounds, a choice not offered. A
//! secret field's input is never echoed back in an error.

use super::{Choice, Field, FieldKind, Page};
use serde::Serialize;
use serde_json::{Map, Value, json};

impl Page {
    /// Validates one page's input. Returns the values of the page's input fields (read-only
    /// fields with their fixed value, absent optional fields as their default or null).
    pub fn validate(&self, input: &Value) -> Result<Map<String, Value>, Vec<FormError>> {
        let Some(obj) = input.as_object() else {
            return Err(vec![FormError::new(
                vec!["__root__".into()],
                "model_type",
                "Input should be a valid dictionary",
                None,
                None,
            )]);
        };
        let mut errors = Vec::new();
        for key in obj.keys() {
            if !self.fields.iter().any(|f| &f.name == key) {
                errors.push(FormError::new(
                    vec![key.clone()],
                    "extra_forbidden",
                    "Extra inputs are not permitted",
                    obj.get(key).cloned(),
                    None,
                ));
            }
        }
        let mut out = Map::new();
        for f in &self.fields {
            if matches!(f.kind, FieldKind::Summary { .. }) {
                continue;
            }
            match obj.get(&f.name) {
                None | Some(Value::Null) if !f.required => {
                    out.insert(f.name.clone(), f.default.clone().unwrap_or(Value::Null));
                }
                None => errors.push(FormError::new(
                    vec![f.name.clone()],
                    "missing",
                    "Field required",
                    None,
                    None,
                )),
                Some(v) => match check(f, v) {
                    Ok(v) => {
                        out.insert(f.name.clone(), v);
                    }
                    Err(mut errs) => {
                        if f.secret {
                            errs.iter_mut().for_each(|e| e.input = None);
                        }
                        errors.append(&mut errs);
                    }
                },
            }
        }
        if errors.is_empty() { Ok(out) } else { Err(errors) }
    }
}

fn expected(choices: &[Choice]) -> String {
    let quoted: Vec<String> = choices.iter().map(|c| format!("'{}'", c.value)).collect();
    match quoted.len() {
        0 => "nothing (there are no choices)".to_owned(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

#[allow(clippy::result_large_err)] // a form error is built once per bad field, never hot
fn check_choice(loc: Vec<String>, choices: &[Choice], v: &Value) -> Result<Value, FormError> {
    match v.as_str() {
        Some(s) if choices.iter().any(|c| c.value == s) => Ok(v.clone()),
        _ => {
            let exp = expected(choices);
            Err(FormError::new(
                loc,
                "enum",
                &format!("Input should be {exp}"),
                Some(v.clone()),
                Some(json!({ "expected": exp })),
            ))
        }
    }
}

fn check(f: &Field, v: &Value) -> Result<Value, Vec<FormError>> {
    let loc = || vec![f.name.clone()];
    let one = |t: &str, msg: &str, ctx: Option<Value>| Err(vec![FormError::new(loc(), t, msg, Some(v.clone()), ctx)]);
    match &f.kind {
        FieldKind::Text { min_length, max_length } => {
            let Some(s) = v.as_str() else {
                return one("string_type", "Input should be a valid string", None);
            };
            let n = s.chars().count();
            if n < *min_length {
                let unit = if *min_length == 1 { "character" } else { "characters" };
                return one(
                    "string_too_short",
                    &format!("String should have at least {min_length} {unit}"),
                    Some(json!({ "min_length": min_length })),
                );
            }
            if n > *max_length {
                return one(
                    "string_too_long",
                    &format!("String should have at most {max_length} characters"),
                    Some(json!({ "max_length": max_length })),
                );
            }
            Ok(v.clone())
        }
        FieldKind::Integer { minimum, maximum } => {
            let Some(i) = v.as_i64() else {
                return if v.is_f64() {
                    one(
                        "int_from_float",
                        "Input should be a valid integer, got a number with a fractional part",
                        None,
                    )
                } else {
                    one("int_type", "Input should be a valid integer", None)
                };
            };
            if let Some(m) = minimum
                && i < *m
            {
                return one(
                    "greater_than_equal",
                    &format!("Input should be greater than or equal to {m}"),
                    Some(json!({ "ge": m })),
                );
            }
            if let Some(m) = maximum
                && i > *m
            {
                return one(
                    "less_than_equal",
                    &format!("Input should be less than or equal to {m}"),
                    Some(json!({ "le": m })),
                );
            }
            Ok(v.clone())
        }
        FieldKind::Boolean => match v {
            Value::Bool(_) => Ok(v.clone()),
            _ => one("bool_type", "Input should be a valid boolean", None),
        },
        FieldKind::Enum { choices } | FieldKind::Product { choices } => {
            check_choice(loc(), choices, v).map_err(|e| vec![e])
        }
        FieldKind::ChoiceList {
            choices,
            min_items,
            max_items,
        } => {
            let Some(items) = v.as_array() else {
                return one("list_type", "Input should be a valid list", None);
            };
            let mut errors: Vec<FormError> = items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| check_choice(vec![f.name.clone(), i.to_string()], choices, item).err())
                .collect();
            let n = items.len();
            if n < *min_items {
                let unit = if *min_items == 1 { "item" } else { "items" };
                errors.push(FormError::new(
                    loc(),
                    "too_short",
                    &format!("List should have at least {min_items} {unit} after validation, not {n}"),
                    Some(v.clone()),
                    Some(json!({"field_type": "List", "min_length": min_items, "actual_length": n})),
                ));
            }
            if n > *max_items {
                let unit = if *max_items == 1 { "item" } else { "items" };
                errors.push(FormError::new(
                    loc(),
                    "too_long",
                    &format!("List should have at most {max_items} {unit} after validation, not {n}"),
                    Some(v.clone()),
                    Some(json!({"field_type": "List", "max_length": max_items, "actual_length": n})),
                ));
            }
            let mut seen = std::collections::HashSet::new();
            if items.iter().any(|i| !seen.insert(i.to_string())) {
                errors.push(FormError::new(
                    loc(),
                    "unique_list",
                    "List must be unique",
                    Some(v.clone()),
                    None,
                ));
            }
            if errors.is_empty() { Ok(v.clone()) } else { Err(errors) }
        }
        FieldKind::ReadOnly { value } => {
            if v == value {
                Ok(v.clone())
            } else {
                one(
                    "literal_error",
                    &format!("Input should be {value}"),
                    Some(json!({ "expected": value })),
                )
            }
        }
        FieldKind::Summary { .. } => Ok(Value::Null),
    }
}

/// One validation error, as pydantic reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FormError {
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx: Option<Value>,
}

impl FormError {
    pub fn new(loc: Vec<String>, kind: &str, msg: &str, input: Option<Value>, ctx: Option<Value>) -> Self {
        Self {
            loc,
            msg: msg.to_owned(),
            kind: kind.to_owned(),
            input,
            ctx,
        }
    }

    /// An error found by a rule beyond the field's type (a taken username, say).
    pub fn field(name: &str, kind: &str, msg: &str) -> Self {
        Self::new(vec![name.to_owned()], kind, msg, None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::form::tests::page;

    #[test]
    fn valid_input_fills_defaults() {
        let v = page()
            .validate(&json!({"username": "ada", "user_group_ids": ["g1"]}))
            .expect("valid");
        assert_eq!(v["age"], Value::Null);
        assert_eq!(v["user_group_ids"], json!(["g1"]));
    }

    #[test]
    fn errors_name_field_type_and_context() {
        let e = page()
            .validate(&json!({"age": "x", "user_group_ids": ["g3", "g1"], "extra": 1, "password": 5}))
            .expect_err("invalid");
        let kinds: Vec<(&str, String)> = e.iter().map(|e| (e.kind.as_str(), e.loc.join("."))).collect();
        assert!(kinds.contains(&("extra_forbidden", "extra".into())), "{kinds:?}");
        assert!(kinds.contains(&("missing", "username".into())));
        assert!(kinds.contains(&("int_type", "age".into())));
        assert!(kinds.contains(&("enum", "user_group_ids.0".into())));
        assert!(kinds.contains(&("too_long", "user_group_ids".into())));
        let enum_err = e.iter().find(|e| e.kind == "enum").expect("enum error");
        assert_eq!(enum_err.msg, "Input should be 'g1' or 'g2'");
        assert_eq!(enum_err.ctx, Some(json!({"expected": "'g1' or 'g2'"})));
        // A secret's input is never echoed.
        let pw = e.iter().find(|e| e.loc == ["password"]).expect("password error");
        assert_eq!(pw.input, None);
    }

    #[test]
    fn empty_choice_list_is_too_short() {
        let e = page()
            .validate(&json!({"username": "ada", "user_group_ids": []}))
            .expect_err("invalid");
        assert_eq!(e[0].kind, "too_short");
        assert_eq!(e[0].msg, "List should have at least 1 item after validation, not 0");
    }

    #[test]
    fn read_only_must_match() {
        let p = Page::new("x").field(Field::read_only("group_id", json!(7)));
        assert_eq!(p.validate(&json!({})).expect("ok")["group_id"], 7);
        assert_eq!(p.validate(&json!({"group_id": 7})).expect("ok")["group_id"], 7);
        assert_eq!(
            p.validate(&json!({"group_id": 8})).expect_err("bad")[0].kind,
            "literal_error"
        );
    }
}
