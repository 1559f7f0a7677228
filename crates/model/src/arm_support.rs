//! What the management API serves, decided by ARM resource type. A request for a type Moat does not implement
//! (replications, webhooks, tasks, scope maps, …) gets one plain answer that names the feature, instead of a
//! route error a person has to decode; a request on a type Moat serves, with a method or action it does not,
//! gets the same answer naming the operation. The few reads that `az` makes as part of a command Moat supports
//! answer what makes that command work (`az acr show-endpoints` lists replications: none).

use crate::activity::ArmOperation;

/// The ARM error code of every answer to something Moat does not serve (the same code the registry settings
/// Moat does not enforce are refused with, see [`crate::unenforced`]).
pub const CODE: &str = "FeatureNotSupported";

/// The resource types Moat implements (in their canonical spelling, see [`crate::activity::arm_operation`]).
/// Every type a route in `crates/server/src/arm` serves must be here: a request for a type that is not is
/// refused before it reaches the routes.
const SERVED: &[&str] = &[
    "Microsoft.Resources/subscriptions",
    "Microsoft.Resources/subscriptions/resources",
    "Microsoft.Resources/subscriptions/resourceGroups",
    "Microsoft.ContainerRegistry",
    "Microsoft.ContainerRegistry/locations/operationResults",
    "Microsoft.ContainerRegistry/registries",
    "Microsoft.ContainerRegistry/registries/listUsages",
    "Microsoft.ContainerRegistry/registries/operationStatuses",
    "Microsoft.ContainerRegistry/registries/privateEndpointConnections",
    "Microsoft.ContainerRegistry/registries/privateEndpointConnections/operationStatuses",
    "Microsoft.ContainerRegistry/registries/privateLinkResources",
    "Microsoft.ContainerRegistry/registries/exportPipelines",
    "Microsoft.ContainerRegistry/registries/exportPipelines/operationStatuses",
    "Microsoft.ContainerRegistry/registries/importPipelines",
    "Microsoft.ContainerRegistry/registries/importPipelines/operationStatuses",
    "Microsoft.ContainerRegistry/registries/pipelineRuns",
    "Microsoft.ContainerRegistry/registries/pipelineRuns/operationStatuses",
    "Microsoft.ContainerRegistry/registries/webhooks",
    "Microsoft.ContainerRegistry/registries/webhooks/operationStatuses",
    "Microsoft.Insights/diagnosticSettings",
    "Microsoft.Insights/diagnosticSettingsCategories",
    "Microsoft.Insights/metrics",
    "Microsoft.Insights/metricDefinitions",
    "Microsoft.Insights/metricNamespaces",
    "Microsoft.Insights/actionGroups",
    "Microsoft.Insights/metricAlerts",
    "Microsoft.Insights/activityLogAlerts",
    "Microsoft.Insights/eventtypes/values",
    "Microsoft.Network/privateEndpoints",
    "Microsoft.Network/privateEndpoints/operationStatuses",
    "Microsoft.Authorization/roleAssignments",
    "Microsoft.Authorization/roleDefinitions",
];

/// Collections Moat does not implement but answers empty, because a supported command lists them: a registry
/// has no replications (`az acr show-endpoints` lists them to name the data endpoints' regions).
const EMPTY_COLLECTIONS: &[&str] = &["Microsoft.ContainerRegistry/registries/replications"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// A type Moat implements: its routes decide (a method they do not serve is [`Support::unsupported`]).
    Served,
    /// `GET` of a collection Moat does not implement, answered `{"value": []}`.
    EmptyList,
    /// Everything else: refused with [`CODE`] and this message.
    Unsupported(String),
}

/// What Moat answers for the request `op` describes.
pub fn support(op: &ArmOperation) -> Support {
    if SERVED.contains(&op.resource_type.as_str()) {
        return Support::Served;
    }
    let read = op.operation_name.ends_with("/read");
    if read && op.collection && EMPTY_COLLECTIONS.contains(&op.resource_type.as_str()) {
        return Support::EmptyList;
    }
    Support::Unsupported(unsupported_message(op))
}

/// The message for a request Moat does not serve: the feature (the resource type's last segment) and its type,
/// or, for a type Moat serves, the operation.
pub fn unsupported_message(op: &ArmOperation) -> String {
    if SERVED.contains(&op.resource_type.as_str()) {
        return format!(
            "Moat does not support the operation {} on this path.",
            op.operation_name
        );
    }
    let feature = op
        .resource_type
        .rsplit('/')
        .next()
        .unwrap_or(&op.resource_type);
    format!("Moat does not support {feature} ({}).", op.resource_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::arm_operation;

    const REG: &str =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/app";

    fn of(method: &str, path: &str) -> Support {
        support(&arm_operation(method, path))
    }

    #[test]
    fn every_feature_moat_lacks_is_named_in_every_spelling_and_method() {
        let features = [
            "replications",
            "tasks",
            "taskRuns",
            "runs",
            "agentPools",
            "connectedRegistries",
            "cacheRules",
            "credentialSets",
            "scopeMaps",
            "tokens",
            "somethingNew",
        ];
        for f in features {
            let want =
                format!("Moat does not support {f} (Microsoft.ContainerRegistry/registries/{f}).");
            for spelling in [
                f.to_string(),
                f.to_ascii_lowercase(),
                f.to_ascii_uppercase(),
            ] {
                let reg = if spelling == f.to_ascii_uppercase() {
                    REG.to_ascii_uppercase().replace("/APP", "/app")
                } else {
                    REG.to_string()
                };
                for (method, path) in [
                    ("PUT", format!("{reg}/{spelling}/x1")),
                    ("GET", format!("{reg}/{spelling}/x1")),
                    ("DELETE", format!("{reg}/{spelling}/x1")),
                    ("PATCH", format!("{reg}/{spelling}/x1")),
                    ("POST", format!("{reg}/{spelling}/x1/ping")),
                    ("POST", format!("{reg}/{spelling}/x1/listEvents")),
                ] {
                    let got = of(method, &path);
                    // The canonical spelling is known for the listed features; a new one keeps the caller's.
                    if f == "somethingNew" {
                        assert!(
                            matches!(&got, Support::Unsupported(m) if m.eq_ignore_ascii_case(&want)),
                            "{method} {path}: {got:?}"
                        );
                    } else {
                        assert_eq!(got, Support::Unsupported(want.clone()), "{method} {path}");
                    }
                }
                let list = of("GET", &format!("{reg}/{spelling}"));
                if f == "replications" {
                    assert_eq!(list, Support::EmptyList, "{spelling}");
                } else if f != "somethingNew" {
                    assert_eq!(list, Support::Unsupported(want.clone()), "{spelling}");
                }
            }
        }
    }

    #[test]
    fn other_providers_and_types_are_named_too() {
        assert_eq!(
            of(
                "PUT",
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a"
            ),
            Support::Unsupported(
                "Moat does not support storageAccounts (Microsoft.Storage/storageAccounts).".into()
            )
        );
        assert_eq!(
            of("GET", "/subscriptions/s1/providers"),
            Support::Unsupported(
                "Moat does not support providers (Microsoft.Resources/subscriptions/providers)."
                    .into()
            )
        );
        // a replication, once named, is not an empty list: only the collection is
        assert!(matches!(
            of("GET", &format!("{REG}/replications/westeurope")),
            Support::Unsupported(_)
        ));
        assert!(matches!(
            of("PUT", &format!("{REG}/replications")),
            Support::Unsupported(_)
        ));
    }

    #[test]
    fn served_types_are_left_to_their_routes() {
        for (m, p) in [
            ("GET", REG.to_string()),
            ("PUT", REG.to_ascii_lowercase()),
            ("POST", format!("{REG}/listCredentials")),
            ("GET", format!("{REG}/listUsages")),
            ("POST", format!("{REG}/importImage")),
            ("GET", format!("{REG}/privateEndpointConnections")),
            ("PUT", format!("{REG}/PRIVATEENDPOINTCONNECTIONS/app.x")),
            ("GET", format!("{REG}/privateLinkResources")),
            ("PUT", format!("{REG}/exportPipelines/exp01")),
            ("GET", format!("{REG}/IMPORTPIPELINES")),
            ("DELETE", format!("{REG}/pipelineRuns/run01")),
            ("PATCH", format!("{REG}/exportPipelines/exp01")),
            (
                "GET",
                format!("{REG}/pipelineRuns/run01/operationStatuses/op-1"),
            ),
            ("GET", format!("{REG}/operationStatuses/op-1")),
            (
                "GET",
                format!("{REG}/privateEndpointConnections/app.x/operationStatuses/op-1"),
            ),
            ("GET", "/subscriptions".to_string()),
            ("GET", "/SUBSCRIPTIONS/s1/RESOURCEGROUPS".to_string()),
            ("PUT", "/subscriptions/s1/resourcegroups/rg".to_string()),
            ("GET", "/subscriptions/s1/resources".to_string()),
            (
                "GET",
                "/subscriptions/s1/providers/Microsoft.ContainerRegistry/registries".to_string(),
            ),
            (
                "POST",
                "/subscriptions/s1/providers/Microsoft.ContainerRegistry/checkNameAvailability"
                    .to_string(),
            ),
            (
                "GET",
                "/subscriptions/s1/providers/Microsoft.ContainerRegistry/locations/l/operationResults/o"
                    .to_string(),
            ),
            (
                "DELETE",
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Network/privateEndpoints/pe"
                    .to_string(),
            ),
        ] {
            assert_eq!(of(m, &p), Support::Served, "{m} {p}");
        }
        assert_eq!(
            unsupported_message(&arm_operation("DELETE", &format!("{REG}/listUsages"))),
            "Moat does not support the operation Microsoft.ContainerRegistry/registries/listUsages/delete on this path."
        );
    }
}
