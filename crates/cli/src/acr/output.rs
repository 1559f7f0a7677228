//! `-o json|table|tsv` rendering, az-style.

use clap::ValueEnum;
use serde_json::Value;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Json,
    Table,
    Tsv,
}

pub const REGISTRY_COLUMNS: [&str; 7] = [
    "NAME",
    "RESOURCE GROUP",
    "LOCATION",
    "SKU",
    "LOGIN SERVER",
    "CREATION DATE",
    "ADMIN ENABLED",
];
pub const CREDENTIAL_COLUMNS: [&str; 3] = ["USERNAME", "PASSWORD", "PASSWORD2"];

/// The resource group named in an ARM id (`.../resourceGroups/{rg}/...`, any case).
pub fn resource_group_from_id(id: &str) -> Option<String> {
    let mut parts = id.split('/').filter(|p| !p.is_empty());
    while let Some(p) = parts.next() {
        if p.eq_ignore_ascii_case("resourceGroups") {
            return parts.next().map(str::to_string);
        }
    }
    None
}

/// How az's table and tsv outputs show a scalar. Text from the server may carry what some client sent (a tag, a
/// description), so control characters are escaped: a cell can neither end its line nor drive the terminal.
fn scalar(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::Bool(true)) => "True".into(),
        Some(Value::Bool(false)) => "False".into(),
        Some(Value::String(s)) => moat_model::text::escape(s),
        Some(other) => other.to_string(),
    }
}

/// The table row of a registry resource.
pub fn registry_row(r: &Value) -> Vec<String> {
    let rg = r
        .get("id")
        .and_then(Value::as_str)
        .and_then(resource_group_from_id)
        .unwrap_or_default();
    vec![
        scalar(r.get("name")),
        rg,
        scalar(r.get("location")),
        scalar(r.pointer("/sku/name")),
        scalar(r.pointer("/properties/loginServer")),
        scalar(r.pointer("/properties/creationDate")),
        scalar(r.pointer("/properties/adminUserEnabled")),
    ]
}

/// The table row of a listCredentials / regenerateCredential answer.
pub fn credential_row(c: &Value) -> Vec<String> {
    let password = |name: &str| {
        c.get("passwords")
            .and_then(Value::as_array)
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            })
            .map(|p| scalar(p.get("value")))
            .unwrap_or_default()
    };
    vec![
        scalar(c.get("username")),
        password("password"),
        password("password2"),
    ]
}

/// Columns padded to their widest cell, two spaces apart, a dashed rule under the header; no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    // Cells are escaped before they are measured, so the columns line up with what is printed.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| moat_model::text::escape(c)).collect())
        .collect();
    let rows = &rows[..];
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = widths[i].saturating_sub(c.chars().count());
            s.push_str(&c);
            s.push_str(&" ".repeat(pad));
        }
        s.trim_end().to_string()
    };
    let mut out = line(&mut headers.iter().map(|h| h.to_string()));
    out.push('\n');
    out.push_str(&line(&mut widths.iter().map(|w| "-".repeat(*w))));
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().cloned()));
        out.push('\n');
    }
    out
}

/// Tab-separated values, one row per line, no header.
pub fn tsv(rows: &[Vec<String>]) -> String {
    rows.iter()
        .map(|r| {
            format!(
                "{}\n",
                r.iter()
                    .map(|c| moat_model::text::escape(c))
                    .collect::<Vec<_>>()
                    .join("\t")
            )
        })
        .collect()
}

/// What a command prints for `value` (one resource or a list) in `format`; `columns`/`row` give the table view.
pub fn render(
    value: &Value,
    format: OutputFormat,
    columns: &[&str],
    row: fn(&Value) -> Vec<String>,
) -> String {
    match format {
        OutputFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        OutputFormat::Table | OutputFormat::Tsv => {
            let rows: Vec<Vec<String>> = match value {
                Value::Array(items) => items.iter().map(row).collect(),
                Value::Null => Vec::new(),
                v => vec![row(v)],
            };
            if format == OutputFormat::Table {
                table(columns, &rows)
            } else {
                tsv(&rows)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reg(name: &str, rg: &str, admin: bool) -> Value {
        json!({
            "id": format!("/subscriptions/s/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}"),
            "name": name, "location": "local", "sku": {"name": "Premium", "tier": "Premium"},
            "properties": {"loginServer": format!("{name}.localhost:5000"), "creationDate": "2026-01-02T03:04:05Z", "adminUserEnabled": admin}
        })
    }

    #[test]
    fn resource_group_is_read_from_the_id() {
        assert_eq!(resource_group_from_id("/subscriptions/s/resourceGroups/rg1/providers/Microsoft.ContainerRegistry/registries/r"), Some("rg1".into()));
        assert_eq!(
            resource_group_from_id("/subscriptions/s/resourcegroups/My.RG(1)/providers/x"),
            Some("My.RG(1)".into())
        );
        assert_eq!(resource_group_from_id("/subscriptions/s"), None);
        assert_eq!(
            resource_group_from_id("/subscriptions/s/resourceGroups"),
            None
        );
    }

    #[test]
    fn registry_table() {
        let list = json!([
            reg("moatreg", "rg1", false),
            reg("other", "group-two", true)
        ]);
        let out = render(&list, OutputFormat::Table, &REGISTRY_COLUMNS, registry_row);
        let expected = "\
NAME     RESOURCE GROUP  LOCATION  SKU      LOGIN SERVER            CREATION DATE         ADMIN ENABLED
-------  --------------  --------  -------  ----------------------  --------------------  -------------
moatreg  rg1             local     Premium  moatreg.localhost:5000  2026-01-02T03:04:05Z  False
other    group-two       local     Premium  other.localhost:5000    2026-01-02T03:04:05Z  True
";
        assert_eq!(out, expected);
        let one = render(
            &reg("moatreg", "rg1", false),
            OutputFormat::Tsv,
            &REGISTRY_COLUMNS,
            registry_row,
        );
        assert_eq!(
            one,
            "moatreg\trg1\tlocal\tPremium\tmoatreg.localhost:5000\t2026-01-02T03:04:05Z\tFalse\n"
        );
        assert_eq!(
            render(
                &json!([]),
                OutputFormat::Tsv,
                &REGISTRY_COLUMNS,
                registry_row
            ),
            ""
        );
        let empty = render(
            &json!([]),
            OutputFormat::Table,
            &REGISTRY_COLUMNS,
            registry_row,
        );
        assert_eq!(empty.lines().count(), 2);
    }

    #[test]
    fn credential_table_and_json() {
        let c = json!({"username":"moatreg","passwords":[{"name":"password","value":"p1"},{"name":"password2","value":"p2"}]});
        assert_eq!(
            render(&c, OutputFormat::Tsv, &CREDENTIAL_COLUMNS, credential_row),
            "moatreg\tp1\tp2\n"
        );
        let t = render(&c, OutputFormat::Table, &CREDENTIAL_COLUMNS, credential_row);
        assert_eq!(t, "USERNAME  PASSWORD  PASSWORD2\n--------  --------  ---------\nmoatreg   p1        p2\n");
        let j = render(&c, OutputFormat::Json, &CREDENTIAL_COLUMNS, credential_row);
        assert_eq!(serde_json::from_str::<Value>(&j).unwrap(), c);
        assert!(j.contains("\n  \"passwords\""), "pretty-printed: {j}");
    }
}
