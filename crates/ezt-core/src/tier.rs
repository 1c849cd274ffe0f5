//! Tenant tiers and their fair-share weights.

use serde::{Deserialize, Serialize};

/// A tenant's service tier. Inside a lane, tenants share capacity in proportion to their tier's
/// weight (defaults: reserved 8, paid 4, free 1; operators may change the weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Capacity reserved for the most important tenants.
    Reserved,
    /// Paying tenants.
    Paid,
    /// Best effort.
    Free,
}

impl Tier {
    /// Wire and storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Reserved => "reserved",
            Tier::Paid => "paid",
            Tier::Free => "free",
        }
    }
    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "reserved" => Some(Tier::Reserved),
            "paid" => Some(Tier::Paid),
            "free" => Some(Tier::Free),
            _ => None,
        }
    }
}

/// Weight per tier for weighted deficit round robin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierWeights {
    /// Weight of `reserved` tenants.
    pub reserved: u32,
    /// Weight of `paid` tenants.
    pub paid: u32,
    /// Weight of `free` tenants.
    pub free: u32,
}

impl Default for TierWeights {
    fn default() -> Self {
        Self {
            reserved: 8,
            paid: 4,
            free: 1,
        }
    }
}

impl TierWeights {
    /// The weight of a tier (at least 1, so nobody starves).
    pub fn weight(&self, tier: Tier) -> u32 {
        match tier {
            Tier::Reserved => self.reserved,
            Tier::Paid => self.paid,
            Tier::Free => self.free,
        }
        .max(1)
    }
}
