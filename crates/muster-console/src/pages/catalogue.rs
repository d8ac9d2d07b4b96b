//! The catalogue, read-only: products (with fixed inputs and blocks), product blocks and
//! workflows with their steps.

use crate::auth::Viewer;
use crate::layout::{Layout, render};
use crate::pages::PageResult;
use askama::Template;
use axum::extract::State;
use muster_server::AppState;
use serde_json::Value;

pub struct ProductRow {
    pub name: String,
    pub description: String,
    pub product_type: String,
    pub tag: String,
    pub status: String,
    pub fixed_inputs: Vec<(String, String)>,
    pub blocks: Vec<String>,
    pub create_href: Option<String>,
}

pub struct WorkflowRow {
    pub name: String,
    pub target: String,
    pub description: String,
    pub is_task: bool,
    pub product_types: String,
    pub steps: Vec<&'static str>,
}

pub struct BlockRow {
    pub name: String,
    pub description: String,
    pub resource_types: String,
    pub depends_on: String,
}

#[derive(Template)]
#[template(path = "catalogue.html")]
struct CataloguePage {
    layout: Layout,
    products: Vec<ProductRow>,
    blocks: Vec<BlockRow>,
    workflows: Vec<WorkflowRow>,
}

fn names(v: &Value, key: &str) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x[key].as_str().or_else(|| x.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// `GET /catalogue`: for everyone signed in.
pub async fn page(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    let c = state.subscriptions.catalogue();
    let super_user = viewer.is_super_user();
    let products = c
        .products
        .iter()
        .map(|p| ProductRow {
            name: p.name.clone(),
            description: p.description.clone(),
            product_type: p.product_type.clone(),
            tag: p.tag.clone(),
            status: p.status.clone(),
            fixed_inputs: p.fixed_inputs.clone(),
            blocks: p.json["product_blocks"]
                .as_array()
                .map(|a| a.iter().filter_map(|b| b["name"].as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            create_href: c
                .workflows_for(&p.product_type)
                .find(|w| w.target == muster_core::workflow::Target::Create)
                .filter(|_| super_user)
                .map(|w| format!("/start/{}?product={}", w.name, p.product_id)),
        })
        .collect();
    let blocks = c
        .blocks
        .iter()
        .map(|b| BlockRow {
            name: b["name"].as_str().unwrap_or("").to_owned(),
            description: b["description"].as_str().unwrap_or("").to_owned(),
            resource_types: names(&b["resource_types"], "resource_type"),
            depends_on: names(&b["depends_on"], "name"),
        })
        .collect();
    let workflows = c
        .workflows
        .iter()
        .map(|w| WorkflowRow {
            name: w.name.clone(),
            target: w.target.as_str().to_owned(),
            description: w.description.clone(),
            is_task: w.is_task,
            product_types: w.product_types.join(", "),
            steps: state
                .processes
                .workflow_steps(&viewer.auth, &w.name)
                .map(|(_, s)| s)
                .unwrap_or_default(),
        })
        .collect();
    Ok(render(&CataloguePage {
        layout: Layout::new(&viewer, "Catalogue", "catalogue"),
        products,
        blocks,
        workflows,
    }))
}
