//! Moat's management API (ARM) as the bench calls it: a service principal's token, then JSON calls.

use super::*;

/// Moat's management API (ARM) on the same listener, as a service principal with the Owner role.
pub struct Arm<'a> {
    pub reg: &'a Reg,
    pub bearer: HeaderValue,
    /// `/subscriptions/<sub>/resourceGroups/moat/providers/Microsoft.ContainerRegistry/registries/default`
    pub registry: String,
}

pub const ARM_API: &str = "api-version=2025-11-01";

/// Sends a JSON (or form) request and returns the parsed JSON answer, failing on any status but `wanted`.
pub async fn json_call(
    reg: &Reg,
    method: Method,
    path: &str,
    auth: Option<&HeaderValue>,
    content_type: &str,
    body: Bytes,
    wanted: StatusCode,
) -> Result<serde_json::Value> {
    let url = reg.url(path);
    let headers = [(hyper::header::CONTENT_TYPE, content_type)];
    let resp = reg
        .send(
            method.clone(),
            path,
            auth,
            if body.is_empty() { &[] } else { &headers },
            BenchBody::full(body),
        )
        .await?;
    if resp.status() != wanted {
        return Err(unexpected(&method, &url, resp, wanted.as_str()).await);
    }
    let b = resp.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&b).with_context(|| {
        format!(
            "{method} {url}: answer is not JSON: {}",
            String::from_utf8_lossy(&b[..b.len().min(2048)])
        )
    })
}

impl<'a> Arm<'a> {
    /// `moat sp create` against the running server's data dir, the client-credentials token, the subscription.
    pub async fn login(env: &Env, server: &Server, reg: &'a Reg) -> Result<Arm<'a>> {
        let mut cmd = env.moat_command();
        cmd.args([
            "sp",
            "create",
            "--name",
            "bench",
            "--role",
            "Owner",
            "--insecure-http",
        ])
        .arg("--data-dir")
        .arg(server.dir.join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", server.port))
        .stdin(Stdio::null());
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "moat sp create: {}; stdout: {text}; stderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let sp: serde_json::Value = serde_json::from_str(text.trim())
            .with_context(|| format!("moat sp create: not JSON: {text}"))?;
        let field = |k: &str| {
            sp.get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| anyhow!("moat sp create: no '{k}' in {text}"))
        };
        let (app_id, password, tenant) = (field("appId")?, field("password")?, field("tenant")?);
        let form = format!(
            "grant_type=client_credentials&client_id={app_id}&client_secret={}&scope=https%3A%2F%2Fmanagement.azure.com%2F.default",
            form_escape(&password)
        );
        let path = format!("/{tenant}/oauth2/v2.0/token");
        let tok = json_call(
            reg,
            Method::POST,
            &path,
            None,
            "application/x-www-form-urlencoded",
            Bytes::from(form),
            StatusCode::OK,
        )
        .await?;
        let token = tok
            .get("access_token")
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow!("POST {path}: no access_token in {tok}"))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))?;
        let path = "/subscriptions?api-version=2022-12-01";
        let subs = json_call(
            reg,
            Method::GET,
            path,
            Some(&bearer),
            "",
            Bytes::new(),
            StatusCode::OK,
        )
        .await?;
        let sub = subs
            .pointer("/value/0/subscriptionId")
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow!("GET {path}: no value[0].subscriptionId in {subs}"))?;
        Ok(Arm {
            reg,
            bearer,
            registry: format!("/subscriptions/{sub}/resourceGroups/moat/providers/Microsoft.ContainerRegistry/registries/default"),
        })
    }

    /// Creates an (auto-approved) private endpoint of the registry listening on `ip`.
    pub async fn create_private_endpoint(&self, ip: &str) -> Result<()> {
        let sub = self.registry.split('/').nth(2).unwrap_or_default();
        let path = format!("/subscriptions/{sub}/resourceGroups/moat/providers/Microsoft.Network/privateEndpoints/bench?api-version=2024-05-01");
        let body = serde_json::json!({"location": "local", "properties": {
            "privateLinkServiceConnections": [{"name": "bench", "properties": {"privateLinkServiceId": self.registry, "groupIds": ["registry"]}}],
            "ipConfigurations": [{"name": "registry", "properties": {"privateIPAddress": ip}}],
        }});
        json_call(
            self.reg,
            Method::PUT,
            &path,
            Some(&self.bearer),
            "application/json",
            Bytes::from(body.to_string()),
            StatusCode::CREATED,
        )
        .await?;
        Ok(())
    }

    /// The registry's `properties.networkRuleSet`.
    pub async fn network_rule_set(&self) -> Result<serde_json::Value> {
        let path = format!("{}?{ARM_API}", self.registry);
        let r = json_call(
            self.reg,
            Method::GET,
            &path,
            Some(&self.bearer),
            "",
            Bytes::new(),
            StatusCode::OK,
        )
        .await?;
        r.pointer("/properties/networkRuleSet")
            .cloned()
            .ok_or_else(|| anyhow!("GET {path}: no properties.networkRuleSet in {r}"))
    }

    /// PATCHes `properties.networkRuleSet` and checks that the answer carries the rules asked for.
    pub async fn set_network_rule_set(&self, set: &serde_json::Value) -> Result<()> {
        let path = format!("{}?{ARM_API}", self.registry);
        let body = serde_json::json!({"properties": {"networkRuleSet": set}});
        let r = json_call(
            self.reg,
            Method::PATCH,
            &path,
            Some(&self.bearer),
            "application/json",
            Bytes::from(body.to_string()),
            StatusCode::OK,
        )
        .await?;
        let got = r.pointer("/properties/networkRuleSet");
        let same = |k: &str| got.and_then(|g| g.get(k)) == set.get(k);
        if !same("defaultAction") || !same("ipRules") {
            bail!(
                "PATCH {path}: asked for networkRuleSet {set}, the answer has {}",
                got.map_or("none".into(), |g| g.to_string())
            );
        }
        Ok(())
    }

    /// Creates a Premium registry in resource group `rg1` and returns its ARM id.
    pub async fn create_registry(&self, name: &str) -> Result<String> {
        let sub = self.registry.split('/').nth(2).unwrap_or_default();
        let id = format!(
            "/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.ContainerRegistry/registries/{name}"
        );
        let body = serde_json::json!({"location": "local", "sku": {"name": "Premium"}});
        json_call(
            self.reg,
            Method::PUT,
            &format!("{id}?{ARM_API}"),
            Some(&self.bearer),
            "application/json",
            Bytes::from(body.to_string()),
            StatusCode::CREATED,
        )
        .await?;
        Ok(id)
    }

    /// `POST <target>/importImage` with `body`, then the wait: a same-server import answers 200 when it is done, a
    /// remote one 202 + `Location`, polled every `IMPORT_POLL` (not after its `Retry-After`) until it answers 200.
    /// Returns the time from the POST to that 200, and the 200's JSON (`Null` for a same-server import's empty body).
    pub async fn import_image(
        &self,
        target: &str,
        body: &serde_json::Value,
    ) -> Result<(Duration, serde_json::Value)> {
        let path = format!("{target}/importImage?{ARM_API}");
        let url = self.reg.url(&path);
        let post = || format!("POST {url} with {body}");
        let headers = [(hyper::header::CONTENT_TYPE, "application/json")];
        let payload = Bytes::from(body.to_string());
        let t = Instant::now();
        let resp = self
            .reg
            .send(
                Method::POST,
                &path,
                Some(&self.bearer),
                &headers,
                BenchBody::full(payload),
            )
            .await?;
        match resp.status() {
            StatusCode::OK => {
                let b = resp
                    .into_body()
                    .collect()
                    .await
                    .with_context(post)?
                    .to_bytes();
                let el = t.elapsed();
                return Ok((el, serde_json::from_slice(&b).unwrap_or_default()));
            }
            StatusCode::ACCEPTED => {}
            _ => {
                return Err(unexpected(&Method::POST, &url, resp, "200 or 202")
                    .await
                    .context(post()))
            }
        }
        let loc = location(resp.headers()).with_context(|| format!("{} -> 202", post()))?;
        resp.into_body().collect().await.with_context(post)?;
        loop {
            tokio::time::sleep(IMPORT_POLL).await;
            let resp = self
                .reg
                .send(
                    Method::GET,
                    &loc,
                    Some(&self.bearer),
                    &[],
                    BenchBody::empty(),
                )
                .await?;
            let status = resp.status();
            if status != StatusCode::OK && status != StatusCode::ACCEPTED {
                return Err(unexpected(&Method::GET, &loc, resp, "200 or 202")
                    .await
                    .context(format!("waiting on the import: {} -> 202", post())));
            }
            let b = resp
                .into_body()
                .collect()
                .await
                .with_context(|| format!("GET {loc}"))?
                .to_bytes();
            if status == StatusCode::OK {
                let el = t.elapsed();
                let v: serde_json::Value = serde_json::from_slice(&b).with_context(|| {
                    format!(
                        "GET {loc} -> 200: not JSON: {}",
                        String::from_utf8_lossy(&b[..b.len().min(2048)])
                    )
                })?;
                if v.get("status").and_then(|s| s.as_str()) != Some("Succeeded") {
                    bail!("GET {loc} -> 200 without status Succeeded: {v}");
                }
                return Ok((el, v));
            }
        }
    }
}

/// `application/x-www-form-urlencoded` escaping of one value.
pub fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
