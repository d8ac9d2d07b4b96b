//! Workflow forms: any page's JSON Schema (pydantic-forms' shape, as the 510 answer carries it)
//! turned into form widgets, and a submitted HTML form turned back into the page's JSON input.
//!
//! Widgets: text, long text (`format: long`), password (`format: password`), integer,
//! boolean, enum dropdown, product picker (`format: productId`), choice list (an array of enum
//! values: one dropdown per row, rows added and removed within `minItems`/`maxItems`),
//! read-only (`const` with `extraProperties.disabled`), label (`format: label`), divider
//! (`format: divider`) and summary table (`format: summary`, `extraProperties.data`).
//!
//! Field `x` travels as the form field `f.x` (repeated for a choice list), so the console's
//! own fields (`_csrf`, `_pages`, …) can never collide with a workflow's.

use crate::urls::Params;
use serde_json::{Map, Value, json};

/// One option of a dropdown.
#[derive(Debug, Clone)]
pub struct Opt {
    pub value: String,
    pub label: String,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Text {
        min: Option<u64>,
        max: Option<u64>,
        long: bool,
        password: bool,
    },
    Integer {
        min: Option<i64>,
        max: Option<i64>,
    },
    Boolean,
    Select {
        options: Vec<Opt>,
    },
    ChoiceList {
        options: Vec<Opt>,
        min: u64,
        max: u64,
    },
    ReadOnly {
        shown: String,
    },
    Label,
    Divider,
    Summary {
        headers: Vec<String>,
        rows: Vec<Vec<String>>,
    },
}

/// One field of a page, ready to render.
#[derive(Debug, Clone)]
pub struct Widget {
    pub name: String,
    /// The HTML id (`f-<name>`).
    pub id: String,
    pub title: String,
    pub required: bool,
    pub kind: Kind,
    /// The value shown (text, integer, selected option, checkbox "true").
    pub value: String,
    /// A choice list's rows.
    pub rows: Vec<String>,
    /// A secret already entered and kept (sealed) by the server.
    pub kept_secret: bool,
    /// Messages from the server's validation, for this field.
    pub errors: Vec<String>,
}

impl Widget {
    pub fn is(&self, kind: &str) -> bool {
        matches!(
            (&self.kind, kind),
            (
                Kind::Text {
                    long: false,
                    password: false,
                    ..
                },
                "text"
            ) | (Kind::Text { long: true, .. }, "long")
                | (
                    Kind::Text {
                        password: true,
                        long: false,
                        ..
                    },
                    "password"
                )
                | (Kind::Integer { .. }, "integer")
                | (Kind::Boolean, "boolean")
                | (Kind::Select { .. }, "select")
                | (Kind::ChoiceList { .. }, "choice_list")
                | (Kind::ReadOnly { .. }, "read_only")
                | (Kind::Label, "label")
                | (Kind::Divider, "divider")
                | (Kind::Summary { .. }, "summary")
        )
    }

    pub fn options(&self) -> &[Opt] {
        match &self.kind {
            Kind::Select { options } | Kind::ChoiceList { options, .. } => options,
            _ => &[],
        }
    }

    /// `minlength`/`maxlength`/`min`/`max` attributes.
    pub fn limits(&self) -> (String, String) {
        match &self.kind {
            Kind::Text { min, max, .. } => (
                min.filter(|m| *m > 0).map(|m| m.to_string()).unwrap_or_default(),
                max.map(|m| m.to_string()).unwrap_or_default(),
            ),
            Kind::Integer { min, max } => (
                min.map(|m| m.to_string()).unwrap_or_default(),
                max.map(|m| m.to_string()).unwrap_or_default(),
            ),
            _ => (String::new(), String::new()),
        }
    }

    pub fn can_add(&self) -> bool {
        matches!(&self.kind, Kind::ChoiceList { max, .. } if (self.rows.len() as u64) < *max)
    }

    pub fn can_remove(&self) -> bool {
        matches!(&self.kind, Kind::ChoiceList { min, .. } if (self.rows.len() as u64) > (*min).max(1))
    }

    pub fn summary(&self) -> (&[String], &[Vec<String>]) {
        match &self.kind {
            Kind::Summary { headers, rows } => (headers, rows),
            _ => (&[], &[]),
        }
    }

    pub fn shown(&self) -> &str {
        match &self.kind {
            Kind::ReadOnly { shown } => shown,
            _ => "",
        }
    }

    /// The ids the control's `aria-describedby` names.
    pub fn described_by(&self) -> String {
        if self.errors.is_empty() {
            String::new()
        } else {
            format!("{}-error", self.id)
        }
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn options_of(s: &Value) -> Vec<Opt> {
    let labels = s.get("options").and_then(Value::as_object);
    s.get("enum")
        .and_then(Value::as_array)
        .map(|values| {
            values
                .iter()
                .map(|v| {
                    let value = text_of(v);
                    let label = labels
                        .and_then(|l| l.get(&value))
                        .map(text_of)
                        .unwrap_or_else(|| value.clone());
                    Opt { value, label }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A summary's `data`: `{"headers": [...], "columns": [[...], ...]}` (pydantic-forms), or a
/// plain object shown as name/value rows.
fn summary_of(data: &Value) -> (Vec<String>, Vec<Vec<String>>) {
    if let (Some(columns), headers) = (data.get("columns").and_then(Value::as_array), data.get("headers")) {
        let headers: Vec<String> = headers
            .and_then(Value::as_array)
            .map(|h| h.iter().map(text_of).collect())
            .unwrap_or_default();
        let n = columns
            .iter()
            .filter_map(Value::as_array)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let rows = (0..n)
            .map(|i| {
                columns
                    .iter()
                    .map(|c| c.get(i).map(text_of).unwrap_or_default())
                    .collect()
            })
            .collect();
        return (headers, rows);
    }
    match data {
        Value::Object(m) => (
            vec!["Field".into(), "Value".into()],
            m.iter().map(|(k, v)| vec![k.clone(), text_of(v)]).collect(),
        ),
        other => (vec![], vec![vec![text_of(other)]]),
    }
}

fn kind_of(s: &Value) -> Kind {
    let format = s.get("format").and_then(Value::as_str).unwrap_or("");
    let ty = s.get("type").and_then(Value::as_str).unwrap_or("");
    let extra = s.get("extraProperties");
    if s.get("const").is_some() || extra.and_then(|e| e.get("disabled")).and_then(Value::as_bool) == Some(true) {
        let v = s
            .get("const")
            .or_else(|| extra.and_then(|e| e.get("value")))
            .cloned()
            .unwrap_or(Value::Null);
        return Kind::ReadOnly { shown: text_of(&v) };
    }
    match (ty, format) {
        (_, "summary") => {
            let (headers, rows) = summary_of(extra.and_then(|e| e.get("data")).unwrap_or(&Value::Null));
            Kind::Summary { headers, rows }
        }
        (_, "label") => Kind::Label,
        (_, "divider") => Kind::Divider,
        ("array", _) => {
            let items = s.get("items").unwrap_or(&Value::Null);
            Kind::ChoiceList {
                options: options_of(items),
                min: s.get("minItems").and_then(Value::as_u64).unwrap_or(0),
                max: s.get("maxItems").and_then(Value::as_u64).unwrap_or(50),
            }
        }
        _ if s.get("enum").is_some() => Kind::Select { options: options_of(s) },
        ("integer", _) => Kind::Integer {
            min: s.get("minimum").and_then(Value::as_i64),
            max: s.get("maximum").and_then(Value::as_i64),
        },
        ("boolean", _) => Kind::Boolean,
        _ => Kind::Text {
            min: s.get("minLength").and_then(Value::as_u64),
            max: s.get("maxLength").and_then(Value::as_u64),
            long: format == "long" || format == "textarea",
            password: format == "password",
        },
    }
}

/// The error messages of a 400's `validation_errors` for each field (`loc[0]`); those naming
/// no field of the page are returned under `""`.
pub fn errors_by_field(errors: &Value, fields: &[String]) -> Vec<(String, String)> {
    errors
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    let field = e["loc"].get(0).map(text_of).unwrap_or_default();
                    let field = if fields.contains(&field) { field } else { String::new() };
                    (field, e["msg"].as_str().unwrap_or("invalid").to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The page's fields in schema order, with `values` (a page's JSON input, or what was typed)
/// filled in and `errors` attached. `secrets_kept` names secret fields whose value the server
/// keeps sealed.
pub fn widgets(
    schema: &Value,
    values: &Map<String, Value>,
    errors: &[(String, String)],
    secrets_kept: &[String],
) -> Vec<Widget> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema["properties"].as_object() else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, s)| {
            let kind = kind_of(s);
            let given = values
                .get(name)
                .or_else(|| s.get("default"))
                .cloned()
                .unwrap_or(Value::Null);
            let password = matches!(kind, Kind::Text { password: true, .. });
            let rows = match (&kind, &given) {
                (Kind::ChoiceList { min, .. }, Value::Array(a)) if !a.is_empty() => {
                    let mut r: Vec<String> = a.iter().map(text_of).collect();
                    while (r.len() as u64) < (*min).max(1) {
                        r.push(String::new());
                    }
                    r
                }
                (Kind::ChoiceList { min, .. }, _) => vec![String::new(); (*min).max(1) as usize],
                _ => Vec::new(),
            };
            Widget {
                id: format!("f-{name}"),
                title: s["title"].as_str().map(str::to_owned).unwrap_or_else(|| name.clone()),
                required: required.contains(&name.as_str()),
                value: if password { String::new() } else { text_of(&given) },
                kept_secret: password && secrets_kept.contains(name),
                errors: errors
                    .iter()
                    .filter(|(f, _)| f == name)
                    .map(|(_, m)| m.clone())
                    .collect(),
                rows,
                kind,
                name: name.clone(),
            }
        })
        .collect()
}

/// What the person typed into a page, as the page's JSON input (and the same values to show
/// again, should the server refuse them). `kept` holds secrets entered earlier and kept sealed.
///
/// Integers that do not parse are sent as typed, so the server's validation names the problem
/// next to the field; empty optional fields are left out (the page's default applies).
pub fn input_of(schema: &Value, form: &Params, kept: &Map<String, Value>) -> Map<String, Value> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Map::new();
    let Some(props) = schema["properties"].as_object() else {
        return out;
    };
    for (name, s) in props {
        let key = format!("f.{name}");
        let raw = form.raw(&key).unwrap_or("");
        let value = match kind_of(s) {
            Kind::ReadOnly { .. } | Kind::Label | Kind::Divider | Kind::Summary { .. } => continue,
            Kind::Boolean => json!(form.get(&key).is_some()),
            Kind::ChoiceList { .. } => json!(form.all(&key)),
            Kind::Integer { .. } if raw.trim().is_empty() => {
                if required.contains(&name.as_str()) {
                    continue;
                }
                Value::Null
            }
            Kind::Integer { .. } => raw
                .trim()
                .parse::<i64>()
                .map(|n| json!(n))
                .unwrap_or_else(|_| json!(raw)),
            Kind::Text { password: true, .. } if raw.is_empty() => match kept.get(name) {
                Some(v) => v.clone(),
                None if required.contains(&name.as_str()) => continue,
                None => Value::Null,
            },
            Kind::Text { .. } | Kind::Select { .. } if raw.is_empty() => {
                if required.contains(&name.as_str()) {
                    continue;
                }
                Value::Null
            }
            _ => json!(raw),
        };
        if !value.is_null() {
            out.insert(name.clone(), value);
        }
    }
    out
}

/// The secret (password) fields of a page.
pub fn secret_fields(schema: &Value) -> Vec<String> {
    schema["properties"]
        .as_object()
        .map(|p| {
            p.iter()
                .filter(|(_, s)| s.get("format").and_then(Value::as_str) == Some("password"))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({
            "title": "Everything", "type": "object", "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 20, "title": "Name"},
                "notes": {"type": "string", "format": "long", "title": "Notes"},
                "age": {"type": "integer", "minimum": 0, "maximum": 150, "title": "Age"},
                "admin": {"type": "boolean", "title": "Admin"},
                "colour": {"type": "string", "enum": ["r", "g"], "options": {"r": "Red", "g": "Green"}, "title": "Colour"},
                "product": {"type": "string", "enum": ["p1"], "format": "productId", "title": "Product"},
                "groups": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 2, "uniqueItems": true, "title": "Groups"},
                "user_id": {"const": 7, "extraProperties": {"disabled": true, "value": 7}, "title": "User Id"},
                "info": {"type": "string", "format": "label", "title": "Read this"},
                "line": {"type": "string", "format": "divider", "title": ""},
                "check": {"type": "string", "format": "summary", "extraProperties": {"data": {"headers": ["k", "v"], "columns": [["a", "b"], ["1", "2"]]}}, "title": "Summary"},
                "password": {"type": "string", "format": "password", "title": "Password"}
            },
            "required": ["name", "age", "groups"]
        })
    }

    #[test]
    fn every_widget_kind_is_recognised() {
        let w = widgets(&schema(), &Map::new(), &[], &[]);
        let kind = |n: &str| w.iter().find(|x| x.name == n).expect(n).clone();
        assert!(kind("name").is("text") && kind("name").required);
        assert!(kind("notes").is("long"));
        assert!(kind("age").is("integer"));
        assert_eq!(kind("age").limits(), ("0".into(), "150".into()));
        assert!(kind("admin").is("boolean"));
        assert!(kind("colour").is("select"));
        assert_eq!(kind("colour").options()[0].label, "Red");
        assert!(kind("product").is("select"));
        assert!(kind("groups").is("choice_list") && kind("groups").can_add() && !kind("groups").can_remove());
        assert_eq!(kind("groups").rows.len(), 1);
        assert!(kind("user_id").is("read_only"));
        assert_eq!(kind("user_id").shown(), "7");
        assert!(kind("info").is("label"));
        assert!(kind("line").is("divider"));
        assert!(kind("check").is("summary"));
        assert_eq!(
            kind("check").summary().1,
            &[
                vec!["a".to_owned(), "1".to_owned()],
                vec!["b".to_owned(), "2".to_owned()]
            ]
        );
        assert!(kind("password").is("password"));
    }

    #[test]
    fn a_submitted_form_becomes_the_pages_input_and_shows_again_as_typed() {
        let form = Params::parse(Some(
            "f.name=Ann&f.age=abc&f.admin=true&f.colour=g&f.groups=a&f.groups=c&f.notes=&f.password=",
        ));
        let kept: Map<String, Value> = [("password".to_owned(), json!("s3cret-pass"))].into_iter().collect();
        let input = input_of(&schema(), &form, &kept);
        assert_eq!(input["name"], json!("Ann"));
        assert_eq!(
            input["age"],
            json!("abc"),
            "sent as typed, so the server says what is wrong"
        );
        assert_eq!(input["admin"], json!(true));
        assert_eq!(input["groups"], json!(["a", "c"]));
        assert_eq!(
            input["password"],
            json!("s3cret-pass"),
            "a kept secret is used when the box is left empty"
        );
        assert!(!input.contains_key("notes") && !input.contains_key("user_id") && !input.contains_key("check"));
        let errors = vec![("age".to_owned(), "Input should be a valid integer".to_owned())];
        let w = widgets(&schema(), &input, &errors, &["password".to_owned()]);
        let age = w.iter().find(|x| x.name == "age").expect("age");
        assert_eq!(age.value, "abc");
        assert_eq!(age.errors, vec!["Input should be a valid integer".to_owned()]);
        let groups = w.iter().find(|x| x.name == "groups").expect("groups");
        assert_eq!(groups.rows, vec!["a".to_owned(), "c".to_owned()]);
        assert!(!groups.can_add() && groups.can_remove());
        let pw = w.iter().find(|x| x.name == "password").expect("password");
        assert!(
            pw.value.is_empty() && pw.kept_secret,
            "a secret is never written back into the page"
        );
        let unchecked = input_of(&schema(), &Params::parse(Some("f.name=A&f.age=3")), &Map::new());
        assert_eq!(unchecked["admin"], json!(false));
        assert_eq!(unchecked["age"], json!(3));
    }

    #[test]
    fn validation_errors_are_matched_to_fields() {
        let errs = json!([{"loc": ["age"], "msg": "too old", "type": "x"}, {"loc": ["__root__"], "msg": "whole form", "type": "y"}]);
        let by = errors_by_field(&errs, &["age".to_owned()]);
        assert_eq!(
            by,
            vec![
                ("age".to_owned(), "too old".to_owned()),
                (String::new(), "whole form".to_owned())
            ]
        );
    }
}
