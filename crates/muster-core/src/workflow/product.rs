//! The User and UserGroup products (orchestrator-core's documented example): their blocks and the fields each lifecycle
//! status requires. orchestrator-core expresses this as one pydantic class per lifecycle; here
//! it is one table, checked whenever a subscription changes status and whenever it is saved.

use super::SubscriptionStatus;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

crate::named_enum! {
    /// A product's domain-model type (`products.product_type`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum ProductType {
        UserGroup = "UserGroup",
        User = "User",
    }
}

impl ProductType {
    /// The root block's name.
    pub fn block_name(self) -> &'static str {
        match self {
            Self::UserGroup => "UserGroupBlock",
            Self::User => "UserBlock",
        }
    }

    /// The attribute of the domain model that holds the root block.
    pub fn block_attribute(self) -> &'static str {
        match self {
            Self::UserGroup => "user_group",
            Self::User => "user",
        }
    }
}

/// UserGroupBlock: a group and the hosting offerings its members get accounts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserGroupBlock {
    pub subscription_instance_id: Uuid,
    pub group_name: Option<String>,
    pub group_id: Option<i64>,
    pub offerings: Vec<Uuid>,
}

/// UserBlock: a person's membership; `group` is the UserGroup subscription whose block it uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserBlock {
    pub subscription_instance_id: Uuid,
    pub username: Option<String>,
    pub age: Option<i32>,
    pub user_id: Option<i64>,
    /// The directory user this membership created (its `uuid`).
    pub directory_user: Option<Uuid>,
    /// The UserGroup subscription this user belongs to.
    pub group: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Block {
    UserGroup(UserGroupBlock),
    User(UserBlock),
}

impl Block {
    pub fn product_type(&self) -> ProductType {
        match self {
            Self::UserGroup(_) => ProductType::UserGroup,
            Self::User(_) => ProductType::User,
        }
    }

    /// The fields `status` requires that this block lacks (empty: the block may have it).
    pub fn missing_for(&self, status: SubscriptionStatus) -> Vec<&'static str> {
        use SubscriptionStatus::*;
        let mut missing = Vec::new();
        match self {
            Self::UserGroup(b) => {
                let named = b.group_name.as_deref().is_some_and(|n| !n.trim().is_empty());
                match status {
                    Initial | Terminated => {}
                    Provisioning => {
                        if !named {
                            missing.push("group_name");
                        }
                    }
                    Active | Disabled | Migrating => {
                        if !named {
                            missing.push("group_name");
                        }
                        if b.group_id.is_none() {
                            missing.push("group_id");
                        }
                    }
                }
            }
            Self::User(b) => {
                let named = b.username.as_deref().is_some_and(|n| !n.trim().is_empty());
                match status {
                    Initial | Terminated => {}
                    Provisioning => {
                        if !named {
                            missing.push("username");
                        }
                        if b.group.is_none() {
                            missing.push("group");
                        }
                    }
                    Active | Disabled | Migrating => {
                        if !named {
                            missing.push("username");
                        }
                        if b.user_id.is_none() {
                            missing.push("user_id");
                        }
                        if b.group.is_none() {
                            missing.push("group");
                        }
                    }
                }
            }
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscriptionStatus::*;

    fn user() -> UserBlock {
        UserBlock {
            subscription_instance_id: Uuid::nil(),
            username: None,
            age: None,
            user_id: None,
            directory_user: None,
            group: None,
        }
    }

    #[test]
    fn an_active_user_needs_username_user_id_and_group() {
        let b = Block::User(user());
        assert!(b.missing_for(Initial).is_empty());
        assert_eq!(b.missing_for(Provisioning), vec!["username", "group"]);
        assert_eq!(b.missing_for(Active), vec!["username", "user_id", "group"]);
        let full = Block::User(UserBlock {
            username: Some("ada".into()),
            user_id: Some(10000),
            group: Some(Uuid::nil()),
            ..user()
        });
        assert!(full.missing_for(Active).is_empty());
        // age stays optional
        assert!(full.missing_for(Disabled).is_empty());
    }

    #[test]
    fn an_active_group_needs_name_and_id() {
        let b = Block::UserGroup(UserGroupBlock {
            subscription_instance_id: Uuid::nil(),
            group_name: Some("  ".into()),
            group_id: None,
            offerings: vec![],
        });
        assert_eq!(b.missing_for(Provisioning), vec!["group_name"]);
        assert_eq!(b.missing_for(Active), vec!["group_name", "group_id"]);
        assert!(b.missing_for(Terminated).is_empty());
    }
}
