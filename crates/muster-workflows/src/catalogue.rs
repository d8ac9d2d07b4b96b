//! The product catalogue, read once at start: it only changes by migration.

use muster_core::workflow::Target;
use muster_store::{CatalogueRows, Store, StoreError};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

fn ts(t: &muster_store::Ts) -> String {
    t.0.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Debug, Clone)]
pub struct Product {
    pub product_id: Uuid,
    pub name: String,
    pub description: String,
    pub product_type: String,
    pub tag: String,
    pub status: String,
    pub fixed_inputs: Vec<(String, String)>,
    pub json: Value,
}

#[derive(Debug, Clone)]
pub struct WorkflowInfo {
    pub workflow_id: Uuid,
    pub name: String,
    pub target: Target,
    pub description: String,
    pub is_task: bool,
    /// Product types the workflow runs on.
    pub product_types: Vec<String>,
    pub json: Value,
}

#[derive(Debug, Clone)]
pub struct Catalogue {
    pub products: Vec<Product>,
    pub blocks: Vec<Value>,
    pub workflows: Vec<WorkflowInfo>,
}

#[derive(Serialize)]
struct ResourceType<'a> {
    resource_type: &'a str,
    description: &'a str,
    value_type: &'a str,
}

impl Catalogue {
    pub async fn load(store: &Store) -> Result<Self, StoreError> {
        Ok(Self::from_rows(store.load_catalogue().await?))
    }

    pub fn from_rows(rows: CatalogueRows) -> Self {
        let block_json = |id: Uuid| -> Option<Value> {
            let b = rows.blocks.iter().find(|b| b.product_block_id == id)?;
            let resource_types: Vec<ResourceType<'_>> = rows
                .resource_types
                .iter()
                .filter(|r| r.product_block_id == id)
                .map(|r| ResourceType {
                    resource_type: &r.resource_type,
                    description: &r.description,
                    value_type: &r.value_type,
                })
                .collect();
            let depends_on: Vec<Value> = rows
                .block_relations
                .iter()
                .filter(|(user, _, _)| *user == id)
                .filter_map(|(_, dep, attr)| {
                    rows.blocks
                        .iter()
                        .find(|b| b.product_block_id == *dep)
                        .map(|d| json!({"product_block_id": d.product_block_id, "name": d.name, "attribute": attr}))
                })
                .collect();
            let in_use_by: Vec<Value> = rows
                .block_relations
                .iter()
                .filter(|(_, dep, _)| *dep == id)
                .filter_map(|(user, _, _)| {
                    rows.blocks
                        .iter()
                        .find(|b| b.product_block_id == *user)
                        .map(|u| json!({"product_block_id": u.product_block_id, "name": u.name}))
                })
                .collect();
            Some(json!({
                "product_block_id": b.product_block_id,
                "name": b.name,
                "description": b.description,
                "tag": b.tag,
                "status": b.status,
                "created_at": ts(&b.created_at),
                "end_date": b.end_date.as_ref().map(ts),
                "resource_types": resource_types,
                "depends_on": depends_on,
                "in_use_by": in_use_by,
            }))
        };
        let workflows: Vec<WorkflowInfo> = rows
            .workflows
            .iter()
            .map(|w| {
                let product_ids: Vec<Uuid> = rows
                    .product_workflows
                    .iter()
                    .filter(|(_, wid)| *wid == w.workflow_id)
                    .map(|(pid, _)| *pid)
                    .collect();
                let mut product_types: Vec<String> = rows
                    .products
                    .iter()
                    .filter(|p| product_ids.contains(&p.product_id))
                    .map(|p| p.product_type.clone())
                    .collect();
                product_types.dedup();
                let target = Target::parse(&w.target).unwrap_or(Target::System);
                WorkflowInfo {
                    workflow_id: w.workflow_id,
                    name: w.name.clone(),
                    target,
                    description: w.description.clone(),
                    is_task: w.is_task,
                    json: json!({
                        "workflow_id": w.workflow_id,
                        "name": w.name,
                        "target": w.target,
                        "description": w.description,
                        "is_task": w.is_task,
                        "created_at": ts(&w.created_at),
                        "product_types": product_types,
                    }),
                    product_types,
                }
            })
            .collect();
        let products = rows
            .products
            .iter()
            .map(|p| {
                let fixed: Vec<_> = rows.fixed_inputs.iter().filter(|f| f.product_id == p.product_id).collect();
                let blocks: Vec<Value> = rows
                    .product_blocks
                    .iter()
                    .filter(|(pid, _)| *pid == p.product_id)
                    .filter_map(|(_, bid)| block_json(*bid))
                    .collect();
                let wfs: Vec<Value> = workflows
                    .iter()
                    .filter(|w| w.product_types.contains(&p.product_type))
                    .map(|w| json!({"workflow_id": w.workflow_id, "name": w.name, "target": w.target.as_str(), "description": w.description}))
                    .collect();
                Product {
                    product_id: p.product_id,
                    name: p.name.clone(),
                    description: p.description.clone(),
                    product_type: p.product_type.clone(),
                    tag: p.tag.clone(),
                    status: p.status.clone(),
                    fixed_inputs: fixed.iter().map(|f| (f.name.clone(), f.value.clone())).collect(),
                    json: json!({
                        "product_id": p.product_id,
                        "name": p.name,
                        "description": p.description,
                        "product_type": p.product_type,
                        "tag": p.tag,
                        "status": p.status,
                        "created_at": ts(&p.created_at),
                        "end_date": p.end_date.as_ref().map(ts),
                        "fixed_inputs": fixed.iter().map(|f| json!({
                            "fixed_input_id": f.fixed_input_id, "name": f.name, "value": f.value,
                            "product_id": f.product_id, "created_at": ts(&f.created_at),
                        })).collect::<Vec<_>>(),
                        "product_blocks": blocks,
                        "workflows": wfs,
                    }),
                }
            })
            .collect();
        let blocks = rows
            .blocks
            .iter()
            .filter_map(|b| block_json(b.product_block_id))
            .collect();
        Self {
            products,
            blocks,
            workflows,
        }
    }

    pub fn product(&self, id: Uuid) -> Option<&Product> {
        self.products.iter().find(|p| p.product_id == id)
    }

    pub fn products_of_type<'a>(&'a self, product_type: &'a str) -> impl Iterator<Item = &'a Product> + 'a {
        self.products.iter().filter(move |p| p.product_type == product_type)
    }

    pub fn workflow(&self, name: &str) -> Option<&WorkflowInfo> {
        self.workflows.iter().find(|w| w.name == name)
    }

    /// Workflows that run on subscriptions of `product_type` (not tasks).
    pub fn workflows_for<'a>(&'a self, product_type: &'a str) -> impl Iterator<Item = &'a WorkflowInfo> + 'a {
        self.workflows
            .iter()
            .filter(move |w| !w.is_task && w.product_types.iter().any(|t| t == product_type))
    }

    pub fn fixed_input<'a>(&'a self, product_id: Uuid, name: &str) -> Option<&'a str> {
        self.product(product_id)?
            .fixed_inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}
