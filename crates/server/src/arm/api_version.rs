//! `api-version` is required on every ARM call. Registry operations accept the versions ACR serves from
//! 2021-06-01-preview (when `exportPolicy` appeared) onward; ARM's generic routes accept their usual versions.

use super::error::ArmError;

pub const REGISTRY_VERSIONS: &[&str] = &[
    "2021-06-01-preview",
    "2021-08-01-preview",
    "2021-09-01",
    "2021-12-01-preview",
    "2022-02-01-preview",
    "2022-12-01",
    "2023-01-01-preview",
    "2023-06-01-preview",
    "2023-07-01",
    "2023-08-01-preview",
    "2023-11-01-preview",
    "2024-01-01-preview",
    "2024-11-01-preview",
    "2025-03-01-preview",
    "2025-04-01",
    "2025-05-01-preview",
    "2025-06-01-preview",
    "2025-09-01-preview",
    "2025-11-01",
    "2025-12-01-preview",
    "2026-01-01-preview",
    "2026-03-01-preview",
    "2026-09-01-preview",
    "2026-11-01",
];

/// Generic ARM routes (`/subscriptions`, `/resources`, resource groups): any dated version of ARM's form.
fn well_formed(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let b = date.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

pub fn check(version: Option<&str>, registry_route: bool) -> Result<String, ArmError> {
    let Some(v) = version.filter(|v| !v.is_empty()) else {
        return Err(ArmError::bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    let ok = if registry_route {
        REGISTRY_VERSIONS.contains(&v)
    } else {
        well_formed(v)
    };
    if ok {
        Ok(v.to_string())
    } else {
        Err(ArmError::bad_request(
            if registry_route { "NoRegisteredProviderFound" } else { "InvalidApiVersionParameter" },
            format!(
                "No registered resource provider found for API version '{v}' for type 'registries'. The supported api-versions are '{}'.",
                REGISTRY_VERSIONS.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions() {
        assert!(super::check(Some("2025-11-01"), true).is_ok());
        assert!(super::check(Some("2026-09-01-preview"), true).is_ok());
        assert_eq!(
            super::check(Some("2019-05-01"), true).unwrap_err().code,
            "NoRegisteredProviderFound"
        );
        assert_eq!(
            super::check(None, true).unwrap_err().code,
            "MissingApiVersionParameter"
        );
        assert!(super::check(Some("2022-12-01"), false).is_ok());
        assert!(super::check(Some("yesterday"), false).is_err());
    }
}
