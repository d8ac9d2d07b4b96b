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

use serde::Serialize;
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

/// Why a form run stopped short of a result.
#[derive(Debug, Clone, PartialEq)]
pub enum FormStop {
    /// The inputs ran out: show this page next (HTTP 510).
    NotComplete { form: Value, meta: Value },
    /// A page's input is invalid (HTTP 400).
    Invalid { title: String, errors: Vec<FormError> },
    /// More inputs than the form has pages.
    Overflow,
}

/// One replay of a form over the pages a client posted.
#[derive(Debug)]
pub struct FormRun {
    inputs: Vec<Value>,
    next: usize,
    state: Map<String, Value>,
}

impl FormRun {
    pub fn new(inputs: Vec<Value>) -> Self {
        Self {
            inputs,
            next: 0,
            state: Map::new(),
        }
    }

    /// Validates the next posted input against `page` and returns its values, or stops with
    /// the page's schema when no input is left for it.
    pub fn page(&mut self, page: Page) -> Result<Map<String, Value>, FormStop> {
        let Some(input) = self.inputs.get(self.next) else {
            return Err(FormStop::NotComplete {
                form: page.schema(),
                meta: page.meta(),
            });
        };
        let values = page.validate(input).map_err(|errors| FormStop::Invalid {
            title: page.title.clone(),
            errors,
        })?;
        self.next += 1;
        self.state.extend(values.clone());
        Ok(values)
    }

    /// Everything the pages gave, once all posted inputs were used.
    pub fn finish(self) -> Result<Map<String, Value>, FormStop> {
        if self.next < self.inputs.len() {
            return Err(FormStop::Overflow);
        }
        Ok(self.state)
    }

    /// What the pages so far gave.
    pub fn state(&self) -> &Map<String, Value> {
        &self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Page {
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

    #[test]
    fn a_run_replays_pages_and_stops_where_inputs_end() {
        let first = Page::new("Product").field(Field::product(vec![Choice::new("p1", "p1")]));
        let mut run = FormRun::new(vec![json!({"product": "p1"})]);
        run.page(first.clone()).expect("page 1");
        match run.page(page()) {
            Err(FormStop::NotComplete { form, meta }) => {
                assert_eq!(form["title"], "New user");
                assert_eq!(meta["hasNext"], false);
            }
            other => panic!("expected NotComplete, got {other:?}"),
        }
        let mut run = FormRun::new(vec![json!({"product": "p1"}), json!({}), json!({})]);
        run.page(first.clone()).expect("page 1");
        assert!(run.page(Page::new("empty")).is_ok());
        assert_eq!(run.finish(), Err(FormStop::Overflow));
        let mut run = FormRun::new(vec![json!({"product": "nope"})]);
        assert!(matches!(run.page(first), Err(FormStop::Invalid { .. })));
    }
}
