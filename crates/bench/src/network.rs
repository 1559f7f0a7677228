//! Workload 6, Moat's alone: workload 3's GET with the default network settings, behind 100 IP rules configured
//! over Moat's ARM API, and through a private endpoint.

use super::*;

/// How many IP rules (b) configures; 127.0.0.1 is allowed only by the last one.
pub const IP_RULES: usize = 100;

#[derive(Default, Clone, Copy)]
pub struct RulesFig {
    /// (a) the registry's default network settings: no rules.
    pub open: f64,
    /// (b) `defaultAction: Deny` and `IP_RULES` rules, the loopback client allowed by the last.
    pub rules: f64,
    /// (c) through an approved private endpoint (127.0.0.2), `IP_RULES` rules none of which admits the client.
    pub private: f64,
}

/// `defaultAction: Deny` with `n - 1` IP rules `10.0.0.0/24`, `10.0.1.0/24`, … (none contains 127.0.0.1), then
/// `127.0.0.1/32` as the `n`th if `allow_loopback`.
pub fn deny_rules(n: usize, allow_loopback: bool) -> serde_json::Value {
    let mut rules: Vec<serde_json::Value> = (0..n - 1)
        .map(|i| serde_json::json!({"action": "Allow", "value": format!("10.{}.{}.0/24", i / 256, i % 256)}))
        .collect();
    if allow_loopback {
        rules.push(serde_json::json!({"action": "Allow", "value": "127.0.0.1/32"}));
    }
    serde_json::json!({"defaultAction": "Deny", "ipRules": rules})
}

/// Workload 6 on one Moat server: (a) manifest GET with the default network settings, (b) with `IP_RULES` rules
/// and `defaultAction: Deny`, alternated `sizes.rounds` times (the best of each kept). Before (b) is first measured,
/// the same rules without the loopback's must make the GET answer 403.
pub async fn network_rules(env: &Env, sizes: &Sizes) -> Result<RulesFig> {
    let s = env.start_moat(false).await?;
    let target = manifest_setup(Arc::new(Reg::plain(&s))).await?;
    let mut pe_reg = Reg::plain(&s);
    pe_reg.ip = [127, 0, 0, 2].into();
    pe_reg.base = format!("http://127.0.0.2:{}", s.port);
    let private = target.via(Arc::new(pe_reg));
    let arm = Arm::login(env, &s, &target.reg).await?;
    let defaults = arm.network_rule_set().await?;
    if defaults.get("defaultAction").and_then(|v| v.as_str()) != Some("Allow")
        || defaults
            .get("ipRules")
            .and_then(|v| v.as_array())
            .is_none_or(|a| !a.is_empty())
    {
        bail!("the default registry's networkRuleSet is {defaults}, wanted defaultAction Allow and no ipRules");
    }
    let defaults = serde_json::json!({"defaultAction": "Allow", "ipRules": []});
    let rules = deny_rules(IP_RULES, true);
    let mut fig = RulesFig::default();
    for round in 1..=sizes.rounds {
        if round > 1 {
            arm.set_network_rule_set(&defaults).await?;
        }
        target.check(StatusCode::OK).await?;
        eprintln!(
            "  (a) default network settings (round {round}/{})",
            sizes.rounds
        );
        let open = target.measure(sizes).await?;
        eprintln!("    {open:.0} requests/s");
        fig.open = fig.open.max(open);
        if round == 1 {
            // Sanity: the rules are applied — without the loopback's, the same GET is refused.
            arm.set_network_rule_set(&deny_rules(IP_RULES, false))
                .await?;
            target.check(StatusCode::FORBIDDEN).await.context(
                "with defaultAction Deny and no rule containing 127.0.0.1, the manifest GET must answer 403",
            )?;
        }
        arm.set_network_rule_set(&rules).await?;
        target.check(StatusCode::OK).await.context(
            "with 127.0.0.1/32 as the last of the IP rules, the manifest GET must answer 200",
        )?;
        eprintln!(
            "  (b) {IP_RULES} IP rules, defaultAction Deny, 127.0.0.1 allowed by the last (round {round}/{})",
            sizes.rounds
        );
        let with_rules = target.measure(sizes).await?;
        eprintln!("    {with_rules:.0} requests/s");
        fig.rules = fig.rules.max(with_rules);

        // (c) The same request through a private endpoint, with rules that admit no one: the endpoint's traffic
        // is private and skips them, but every request is still classified and gated.
        if round == 1 {
            arm.create_private_endpoint("127.0.0.2").await?;
        }
        arm.set_network_rule_set(&deny_rules(IP_RULES, false))
            .await?;
        target.check(StatusCode::FORBIDDEN).await?;
        private.check(StatusCode::OK).await.context(
            "through the approved private endpoint the manifest GET must answer 200 whatever the IP rules",
        )?;
        eprintln!(
            "  (c) through a private endpoint, {IP_RULES} IP rules admitting no one (round {round}/{})",
            sizes.rounds
        );
        let through = private.measure(sizes).await?;
        eprintln!("    {through:.0} requests/s");
        fig.private = fig.private.max(through);
    }
    drop(arm);
    drop(target);
    drop(s);
    Ok(fig)
}
