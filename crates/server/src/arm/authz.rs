//! What a management request asks to do, as ARM's `AuthorizationFailed` names it: the action
//! (`Microsoft.ContainerRegistry/registries/listCredentials/action`) and the scope, as the caller spelled it.
//! A refusal is decided from the path alone, before anything is looked up, so it reads the same whether the
//! resource exists or not: a caller learns nothing about a scope it has no rights on.

use axum::http::Method;

/// Canonical casing of the path segments ARM action names use (paths are case-insensitive; actions are not).
fn canonical(lower: &str) -> &str {
    match lower {
        "microsoft.containerregistry" => "Microsoft.ContainerRegistry",
        "microsoft.network" => "Microsoft.Network",
        "privateendpoints" => "privateEndpoints",
        "privateendpointconnections" => "privateEndpointConnections",
        "privatelinkresources" => "privateLinkResources",
        "listcredentials" => "listCredentials",
        "regeneratecredential" => "regenerateCredential",
        "generatecredentials" => "generateCredentials",
        "importimage" => "importImage",
        "listusages" => "listUsages",
        "operationstatuses" => "operationStatuses",
        "operationresults" => "operationResults",
        "checknameavailability" => "checkNameAvailability",
        other => other,
    }
}

fn verb(m: &Method) -> &'static str {
    match *m {
        Method::GET | Method::HEAD => "read",
        Method::DELETE => "delete",
        Method::POST => "action",
        _ => "write",
    }
}

/// `(action, scope)` of a request on `/subscriptions/...`: `segments` as the caller spelled them (decoded),
/// `lower` the same lower-cased.
pub fn requested(m: &Method, segments: &[String], lower: &[String]) -> (String, String) {
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let upto = |n: usize| format!("/{}", segments[..n.min(segments.len())].join("/"));
    let verb = verb(m);
    // `{scope}/providers/Microsoft.Authorization/{type}[/{name}]`: an extension resource of its scope, named with
    // the whole path (ARM names a role assignment write over the assignment's id).
    if let Some(k) = super::authorization::extension_at(&l) {
        let kind = match l.get(k + 2).copied() {
            Some("roleassignments") => "roleAssignments",
            Some("roledefinitions") => "roleDefinitions",
            Some(other) => other,
            None => "resources",
        };
        return (
            format!("Microsoft.Authorization/{kind}/{verb}"),
            upto(segments.len()),
        );
    }
    match &l[..] {
        [_] | [_, _] => (format!("Microsoft.Resources/subscriptions/{verb}"), upto(2)),
        [_, _, "resourcegroups"] => (
            format!("Microsoft.Resources/subscriptions/resourceGroups/{verb}"),
            upto(2),
        ),
        [_, _, "resourcegroups", _] => (
            format!("Microsoft.Resources/subscriptions/resourceGroups/{verb}"),
            upto(4),
        ),
        // A resource of a provider: `…/providers/{ns}/{type}/{name}[/{child}…]`, at subscription or group scope.
        [_, _, "resourcegroups", _, "providers", ns, kind, rest @ ..]
        | [_, _, "providers", ns, kind, rest @ ..] => {
            let at = if l[2] == "resourcegroups" { 4 } else { 2 };
            let mut action = format!("{}/{}", canonical(ns), canonical(kind));
            let scope = match rest {
                [] => upto(at),
                [_, child, ..] => {
                    action.push('/');
                    action.push_str(canonical(child));
                    upto(at + 4)
                }
                [_] => upto(at + 4),
            };
            if matches!(rest, [_, _]) && *m == Method::POST {
                // `POST REG/listCredentials`: the child is the action itself.
                return (format!("{action}/action"), scope);
            }
            (format!("{action}/{verb}"), scope)
        }
        _ => (
            format!("Microsoft.Resources/subscriptions/resources/{verb}"),
            upto(2),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(m: Method, path: &str) -> (String, String) {
        let segments: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .map(str::to_string)
            .collect();
        let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
        requested(&m, &segments, &lower)
    }

    #[test]
    fn actions_and_scopes_as_arm_names_them() {
        let reg = "/subscriptions/S/resourceGroups/Team-B/providers/Microsoft.ContainerRegistry/registries/Secret";
        assert_eq!(
            of(Method::GET, reg),
            (
                "Microsoft.ContainerRegistry/registries/read".into(),
                reg.into()
            )
        );
        assert_eq!(
            of(Method::POST, &format!("{reg}/listCredentials")),
            (
                "Microsoft.ContainerRegistry/registries/listCredentials/action".into(),
                reg.into()
            )
        );
        assert_eq!(
            of(Method::PUT, &format!("{reg}/privateEndpointConnections/c1")).0,
            "Microsoft.ContainerRegistry/registries/privateEndpointConnections/write"
        );
        assert_eq!(
            of(Method::GET, "/subscriptions/S/resourcegroups"),
            (
                "Microsoft.Resources/subscriptions/resourceGroups/read".into(),
                "/subscriptions/S".into()
            )
        );
        assert_eq!(
            of(Method::GET, "/subscriptions/S/resourceGroups/rg1").1,
            "/subscriptions/S/resourceGroups/rg1"
        );
        assert_eq!(
            of(
                Method::GET,
                "/subscriptions/S/providers/Microsoft.ContainerRegistry/registries"
            ),
            (
                "Microsoft.ContainerRegistry/registries/read".into(),
                "/subscriptions/S".into()
            )
        );
        assert_eq!(
            of(Method::DELETE, "/subscriptions/S/resourceGroups/g/providers/Microsoft.Network/privateEndpoints/pe1"),
            (
                "Microsoft.Network/privateEndpoints/delete".into(),
                "/subscriptions/S/resourceGroups/g/providers/Microsoft.Network/privateEndpoints/pe1".into()
            )
        );
        assert_eq!(
            of(Method::GET, "/subscriptions/S").0,
            "Microsoft.Resources/subscriptions/read"
        );
        // Role assignments extend any scope and are named over their whole path.
        for scope in ["/subscriptions/S", "/subscriptions/S/resourceGroups/g", reg] {
            let path = format!("{scope}/providers/microsoft.authorization/ROLEASSIGNMENTS/a1");
            assert_eq!(
                of(Method::PUT, &path),
                (
                    "Microsoft.Authorization/roleAssignments/write".into(),
                    path.clone()
                )
            );
            assert_eq!(
                of(Method::DELETE, &path).0,
                "Microsoft.Authorization/roleAssignments/delete"
            );
        }
        assert_eq!(
            of(
                Method::GET,
                &format!("{reg}/providers/Microsoft.Authorization/roleDefinitions")
            )
            .0,
            "Microsoft.Authorization/roleDefinitions/read"
        );
    }
}
