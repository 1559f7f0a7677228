//! A registry as the policy sees it: its identity, SKU and the settings that decide what may leave it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sku {
    Basic,
    Standard,
    Premium,
}

impl Sku {
    pub fn as_str(self) -> &'static str {
        match self {
            Sku::Basic => "Basic",
            Sku::Standard => "Standard",
            Sku::Premium => "Premium",
        }
    }

    pub fn parse(s: &str) -> Option<Sku> {
        match s.to_ascii_lowercase().as_str() {
            "basic" => Some(Sku::Basic),
            "standard" => Some(Sku::Standard),
            "premium" => Some(Sku::Premium),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Stable id (32 hex), carried in tokens as ACR's `rid` so a token cannot be replayed on a re-created registry.
    pub id: String,
    pub name: String,
    /// The Host this registry answers on; tokens are issued for it as their audience.
    pub login_server: String,
    pub sku: Sku,
    /// Lets callers without credentials pull (ACR's `anonymousPullEnabled`).
    pub anonymous_pull_enabled: bool,
    /// ACR's `policies.exportPolicy.status == enabled`.
    pub export_enabled: bool,
}
