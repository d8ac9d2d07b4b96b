//! The replay of a form: the inputs a client posted, one per page, validated in order over
//! the pages the workflow builds, stopping with the next page's schema when they run out.

use super::{FormError, Page};
use serde_json::{Map, Value};

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
    use crate::workflow::form::tests::page;
    use crate::workflow::form::{Choice, Field};
    use serde_json::json;

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
