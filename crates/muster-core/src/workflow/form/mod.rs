//! Input forms, following pydantic-forms' protocol (<https://github.com/workfloworchestrator/pydantic-forms>).
//!
//! A form is a sequence of [`Page`]s. Clients post the inputs of every page they have filled so
//! far, each time; the form is *replayed* over them ([`FormRun`]): each page validates its
//! input and may depend on what earlier pages chose. When the inputs run out the caller gets
//! the next page's JSON Schema (HTTP 510); when a page's input is wrong, the list of
//! [`FormError`]s with pydantic's `loc` / `msg` / `type` / `ctx` (HTTP 400).
//!
//! Choices (dropdowns) are plain data here: whoever builds the page queries them, so they are
//! current both when the page is rendered and when it is submitted (the page is rebuilt on
//! every replay).
//!
//! The pages and their fields, with the JSON Schema a client renders, are here; checking a
//! page's input against its fields is in `validate`, and replaying the posted inputs over the
//! pages in `run`. Their types are re-exported here.

mod run;
mod validate;

pub use run::{FormRun, FormStop};
pub use validate::FormError;

use serde_json::{Map, Value, json};

/// One option of a dropdown: the value submitted and the label shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub value: String,
    pub label: String,
}

impl Choice {
    pub fn new(value: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            label: label.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldKind {
    Text {
        min_length: usize,
        max_length: usize,
    },
    Integer {
        minimum: Option<i64>,
        maximum: Option<i64>,
    },
    Boolean,
    /// One of the choices (a single dropdown).
    Enum {
        choices: Vec<Choice>,
    },
    /// A list of choices (`choice_list`): rendered as a list of dropdowns.
    ChoiceList {
        choices: Vec<Choice>,
        min_items: usize,
        max_items: usize,
    },
    /// The product a create workflow makes (page 1 of every create form).
    Product {
        choices: Vec<Choice>,
    },
    /// Shown, not editable: a submitted value must equal it.
    ReadOnly {
        value: Value,
    },
    /// A summary shown before submitting; carries no input.
    Summary {
        data: Value,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub title: Option<String>,
    pub kind: FieldKind,
    pub required: bool,
    pub default: Option<Value>,
    /// Never echoed back in errors (passwords).
    pub secret: bool,
}

impl Field {
    fn of(name: &str, kind: FieldKind) -> Self {
        Self {
            name: name.to_owned(),
            title: None,
            kind,
            required: true,
            default: None,
            secret: false,
        }
    }

    pub fn text(name: &str) -> Self {
        Self::of(
            name,
            FieldKind::Text {
                min_length: 1,
                max_length: 255,
            },
        )
    }

    pub fn integer(name: &str) -> Self {
        Self::of(
            name,
            FieldKind::Integer {
                minimum: None,
                maximum: None,
            },
        )
    }

    pub fn boolean(name: &str) -> Self {
        Self::of(name, FieldKind::Boolean)
    }

    pub fn choice(name: &str, choices: Vec<Choice>) -> Self {
        Self::of(name, FieldKind::Enum { choices })
    }

    pub fn choice_list(name: &str, choices: Vec<Choice>, min_items: usize, max_items: usize) -> Self {
        Self::of(
            name,
            FieldKind::ChoiceList {
                choices,
                min_items,
                max_items,
            },
        )
    }

    pub fn product(choices: Vec<Choice>) -> Self {
        Self::of("product", FieldKind::Product { choices })
    }

    pub fn read_only(name: &str, value: Value) -> Self {
        let mut f = Self::of(name, FieldKind::ReadOnly { value: value.clone() });
        f.required = false;
        f.default = Some(value);
        f
    }

    pub fn summary(name: &str, data: Value) -> Self {
        let mut f = Self::of(name, FieldKind::Summary { data });
        f.required = false;
        f
    }

    pub fn title(mut self, title: &str) -> Self {
        self.title = Some(title.to_owned());
        self
    }

    /// Not required; absent means `default` (or null).
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }

    pub fn default(mut self, value: Value) -> Self {
        self.required = false;
        self.default = Some(value);
        self
    }

    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    pub fn length(mut self, min: usize, max: usize) -> Self {
        if let FieldKind::Text { min_length, max_length } = &mut self.kind {
            *min_length = min;
            *max_length = max;
        }
        self
    }

    pub fn range(mut self, min: Option<i64>, max: Option<i64>) -> Self {
        if let FieldKind::Integer { minimum, maximum } = &mut self.kind {
            *minimum = min;
            *maximum = max;
        }
        self
    }

    fn schema(&self) -> Value {
        let title = self.title.clone().unwrap_or_else(|| title_case(&self.name));
        let mut s = match &self.kind {
            FieldKind::Text { min_length, max_length } => {
                json!({"type": "string", "minLength": min_length, "maxLength": max_length})
            }
            FieldKind::Integer { minimum, maximum } => {
                let mut s = json!({"type": "integer"});
                if let Some(m) = minimum {
                    s["minimum"] = json!(m);
                }
                if let Some(m) = maximum {
                    s["maximum"] = json!(m);
                }
                s
            }
            FieldKind::Boolean => json!({"type": "boolean"}),
            FieldKind::Enum { choices } => enum_schema(choices),
            FieldKind::Product { choices } => {
                let mut s = enum_schema(choices);
                s["format"] = json!("productId");
                s
            }
            FieldKind::ChoiceList {
                choices,
                min_items,
                max_items,
            } => json!({
                "type": "array",
                "items": enum_schema(choices),
                "minItems": min_items,
                "maxItems": max_items,
                "uniqueItems": true,
            }),
            FieldKind::ReadOnly { value } => json!({
                "const": value,
                "extraProperties": {"disabled": true, "value": value},
            }),
            FieldKind::Summary { data } => json!({
                "type": "string",
                "format": "summary",
                "extraProperties": {"data": data},
            }),
        };
        s["title"] = json!(title);
        if self.secret {
            s["format"] = json!("password");
        }
        if let Some(d) = &self.default {
            s["default"] = d.clone();
        }
        s
    }
}

fn enum_schema(choices: &[Choice]) -> Value {
    let values: Vec<&str> = choices.iter().map(|c| c.value.as_str()).collect();
    let mut s = json!({"type": "string", "enum": values});
    // pydantic-forms adds `options` only where labels differ from values.
    if choices.iter().any(|c| c.label != c.value) {
        let options: Map<String, Value> = choices
            .iter()
            .map(|c| (c.value.clone(), Value::String(c.label.clone())))
            .collect();
        s["options"] = Value::Object(options);
    }
    s
}

fn title_case(name: &str) -> String {
    name.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One page of a form.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub title: String,
    pub fields: Vec<Field>,
    /// Whether another page follows (`meta.hasNext`).
    pub has_next: bool,
}

impl Page {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            fields: Vec::new(),
            has_next: true,
        }
    }

    pub fn field(mut self, field: Field) -> Self {
        self.fields.push(field);
        self
    }

    /// The last page of its form (a submit page).
    pub fn last(mut self) -> Self {
        self.has_next = false;
        self
    }

    /// The page's JSON Schema, as pydantic-forms renders it.
    pub fn schema(&self) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for f in &self.fields {
            properties.insert(f.name.clone(), f.schema());
            if f.required {
                required.push(Value::String(f.name.clone()));
            }
        }
        json!({
            "title": self.title,
            "type": "object",
            "additionalProperties": false,
            "properties": properties,
            "required": required,
        })
    }

    pub fn meta(&self) -> Value {
        json!({ "hasNext": self.has_next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page with every kind of check: required and optional fields, a range, a choice list
    /// and a secret.
    pub(super) fn page() -> Page {
        Page::new("New user")
            .field(Field::text("username"))
            .field(Field::integer("age").optional().range(Some(0), Some(150)))
            .field(Field::choice_list(
                "user_group_ids",
                vec![Choice::new("g1", "Group one"), Choice::new("g2", "Group two")],
                1,
                1,
            ))
            .field(Field::text("password").optional().secret())
            .last()
    }

    #[test]
    fn schema_has_required_fields_and_choices() {
        let s = page().schema();
        assert_eq!(s["required"], json!(["username", "user_group_ids"]));
        assert_eq!(s["properties"]["user_group_ids"]["minItems"], 1);
        assert_eq!(s["properties"]["user_group_ids"]["items"]["enum"], json!(["g1", "g2"]));
        assert_eq!(s["properties"]["user_group_ids"]["items"]["options"]["g2"], "Group two");
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(page().meta(), json!({"hasNext": false}));
    }
}
