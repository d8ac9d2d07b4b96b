//! The product catalogue: static rows seeded by migration, read once at start.

use crate::{Result, Store, Ts, on_db};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProductRow {
    pub product_id: Uuid,
    pub name: String,
    pub description: String,
    pub product_type: String,
    pub tag: String,
    pub status: String,
    pub created_at: Ts,
    pub end_date: Option<Ts>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FixedInputRow {
    pub fixed_input_id: Uuid,
    pub product_id: Uuid,
    pub name: String,
    pub value: String,
    pub created_at: Ts,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProductBlockRow {
    pub product_block_id: Uuid,
    pub name: String,
    pub description: String,
    pub tag: String,
    pub status: String,
    pub created_at: Ts,
    pub end_date: Option<Ts>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResourceTypeRow {
    pub product_block_id: Uuid,
    pub resource_type: String,
    pub description: String,
    pub value_type: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkflowRow {
    pub workflow_id: Uuid,
    pub name: String,
    pub target: String,
    pub description: String,
    pub is_task: bool,
    pub created_at: Ts,
}

/// Every catalogue table, as rows.
#[derive(Debug, Clone, Default)]
pub struct CatalogueRows {
    pub products: Vec<ProductRow>,
    pub fixed_inputs: Vec<FixedInputRow>,
    pub blocks: Vec<ProductBlockRow>,
    pub resource_types: Vec<ResourceTypeRow>,
    /// (product_id, product_block_id)
    pub product_blocks: Vec<(Uuid, Uuid)>,
    /// (in_use_by block, depends_on block, attribute)
    pub block_relations: Vec<(Uuid, Uuid, String)>,
    pub workflows: Vec<WorkflowRow>,
    /// (product_id, workflow_id)
    pub product_workflows: Vec<(Uuid, Uuid)>,
}

impl Store {
    pub async fn load_catalogue(&self) -> Result<CatalogueRows> {
        Ok(on_db!(self, read, pool => {
            CatalogueRows {
                products: sqlx::query_as("SELECT product_id, name, description, product_type, tag, status, created_at, end_date FROM products ORDER BY name")
                    .fetch_all(pool).await?,
                fixed_inputs: sqlx::query_as("SELECT fixed_input_id, product_id, name, value, created_at FROM fixed_inputs ORDER BY name")
                    .fetch_all(pool).await?,
                blocks: sqlx::query_as("SELECT product_block_id, name, description, tag, status, created_at, end_date FROM product_blocks ORDER BY name")
                    .fetch_all(pool).await?,
                resource_types: sqlx::query_as("SELECT product_block_id, resource_type, description, value_type FROM product_block_resource_types ORDER BY position")
                    .fetch_all(pool).await?,
                product_blocks: sqlx::query_as("SELECT product_id, product_block_id FROM product_product_blocks")
                    .fetch_all(pool).await?,
                block_relations: sqlx::query_as("SELECT in_use_by_id, depends_on_id, attribute FROM product_block_relations")
                    .fetch_all(pool).await?,
                workflows: sqlx::query_as("SELECT workflow_id, name, target, description, is_task, created_at FROM workflows ORDER BY name")
                    .fetch_all(pool).await?,
                product_workflows: sqlx::query_as("SELECT product_id, workflow_id FROM products_workflows")
                    .fetch_all(pool).await?,
            }
        }))
    }
}
