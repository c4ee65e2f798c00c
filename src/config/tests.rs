//! Parsing and validation of whole configuration files: defaults, unknown keys, and the
//! messages that name the key.

use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::*;

const MINIMAL: &str = r#"
policies: {dir: ./policies}
issuers:
  - issuer: https://idp.example.com
servers:
  - id: weather
    resource: https://mcp.example.com/weather/mcp
    authorization_servers: [https://idp.example.com]
"#;

fn err(yaml: &str) -> String {
    match Config::from_yaml(yaml) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::from_yaml(MINIMAL).unwrap();
    assert_eq!(c.listen.grpc.port(), 9191);
    assert_eq!(c.issuers[0].algorithms, vec![Algorithm::RS256]);
    assert_eq!(c.issuers[0].typ_policy(), TypPolicy::Strict);
    assert_eq!(c.identity_headers.subject, "x-mcp-authz-subject");
}

#[test]
fn unknown_keys_are_rejected() {
    let e = err(&format!("{MINIMAL}\nbogus: 1\n"));
    assert!(e.contains("bogus"), "{e}");
    let e = err(&MINIMAL.replace("issuer: https", "isuer: https"));
    assert!(e.contains("isuer"), "{e}");
}

#[test]
fn authorization_server_must_be_configured() {
    let e = err(&MINIMAL.replace("[https://idp.example.com]", "[https://other]"));
    assert!(e.contains("servers[0].authorization_servers[0]"), "{e}");
}

#[test]
fn hmac_needs_a_secret_and_secret_needs_hmac() {
    let e = err(&MINIMAL.replace(
        "issuer: https://idp.example.com\n",
        "issuer: https://idp.example.com\n    algorithms: [HS256]\n",
    ));
    assert!(e.contains("hmac_secret"), "{e}");
    let e = err(&MINIMAL.replace(
        "issuer: https://idp.example.com\n",
        "issuer: https://idp.example.com\n    algorithms: [HS256]\n    hmac_secret: {env: MCP_AUTHZ_TEST_UNSET_VAR}\n",
    ));
    assert!(e.contains("MCP_AUTHZ_TEST_UNSET_VAR"), "{e}");
}

#[test]
fn alg_none_is_not_an_algorithm() {
    let e = err(&MINIMAL.replace(
        "issuer: https://idp.example.com\n",
        "issuer: https://idp.example.com\n    algorithms: [none]\n",
    ));
    assert!(e.contains("none"), "{e}");
}

#[test]
fn plain_http_only_on_loopback() {
    let e = err(&MINIMAL.replace(
        "issuer: https://idp.example.com\n",
        "issuer: https://idp.example.com\n    jwks_uri: http://idp.example.com/jwks\n",
    ));
    assert!(
        e.contains("jwks_uri") && e.contains("allow_insecure_http"),
        "{e}"
    );
    Config::from_yaml(&MINIMAL.replace(
        "issuer: https://idp.example.com\n",
        "issuer: https://idp.example.com\n    jwks_uri: http://127.0.0.1:1/jwks\n",
    ))
    .unwrap();
}

#[test]
fn resource_with_fragment_is_rejected() {
    let e = err(&MINIMAL.replace("weather/mcp", "weather/mcp#x"));
    assert!(e.contains("servers[0].resource"), "{e}");
}

#[test]
fn refresh_bounds_are_checked() {
    let e = err(&MINIMAL.replace(
        "issuer: https://idp.example.com\n",
        "issuer: https://idp.example.com\n    key_refresh: {unknown_kid_interval: 0s}\n",
    ));
    assert!(
        e.contains("issuers[0].key_refresh.unknown_kid_interval"),
        "{e}"
    );
    let e = err(&MINIMAL.replace(
        "issuer: https://idp.example.com\n",
        "issuer: https://idp.example.com\n    key_refresh: {fetch_timeout: 100years}\n",
    ));
    assert!(e.contains("fetch_timeout"), "{e}");
}

#[test]
fn hmac_secret_length_follows_the_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    std::fs::write(&path, [b'x'; 40]).unwrap();
    let yaml = |alg: &str| {
        MINIMAL.replace(
            "issuer: https://idp.example.com\n",
            &format!(
                "issuer: https://idp.example.com\n    algorithms: [{alg}]\n    hmac_secret: {{file: {}}}\n",
                path.display()
            ),
        )
    };
    Config::from_yaml(&yaml("HS256")).unwrap();
    let e = err(&yaml("HS384"));
    assert!(e.contains("48 bytes"), "{e}");
}

#[test]
fn durations_are_humane() {
    let c = Config::from_yaml(&MINIMAL.replace(
        "issuer: https://idp.example.com\n",
        "issuer: https://idp.example.com\n    leeway: 10s\n    key_refresh: {min_interval: 2m}\n",
    ))
    .unwrap();
    assert_eq!(c.issuers[0].leeway, Duration::from_secs(10));
    assert_eq!(
        c.issuers[0].key_refresh.min_interval,
        Duration::from_secs(120)
    );
}

#[test]
fn errors_name_the_file_then_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let load = |text: Option<&str>| {
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        match Config::load(&path) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    };
    let file = path.display().to_string();

    let e = load(None);
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot read `{file}`: ")),
        "{e}"
    );

    let bad = format!("{MINIMAL}bogus: 1\n");
    let e = load(Some(&bad));
    assert!(
        matches!(&e, ConfigError::Parse { file: Some(f), .. } if *f == path),
        "{e:?}"
    );
    let parse = err(&bad);
    assert!(parse.starts_with("unknown field `bogus`"), "{parse}");
    assert!(parse.ends_with("at line 9 column 1"), "{parse}");
    assert_eq!(e.to_string(), format!("`{file}`: {parse}"));

    let bad = MINIMAL.replace(
        "issuer: https://idp.example.com\n",
        "issuer: https://idp.example.com\n    leeway: 10m\n",
    );
    let e = load(Some(&bad));
    assert!(
        matches!(&e, ConfigError::Invalid { file: Some(f), invalid } if *f == path && invalid.key == "issuers[0].leeway"),
        "{e:?}"
    );
    assert_eq!(err(&bad), "key `issuers[0].leeway`: must be at most 5m");
    assert_eq!(
        e.to_string(),
        format!("`{file}`: key `issuers[0].leeway`: must be at most 5m")
    );
}

/// The forms docs/configuration.md and the README show.
#[test]
fn tenant_from_is_written_as_a_one_key_map() {
    let with = |line: &str| format!("{MINIMAL}    {line}\n");
    let header = Config::from_yaml(&with("tenant_from: {header: x-tenant-id}")).unwrap();
    assert_eq!(
        header.servers[0].tenant_from,
        Some(TenantFrom::Header("x-tenant-id".into()))
    );
    let block = Config::from_yaml(&with("tenant_from:\n      path_segment: 2")).unwrap();
    assert_eq!(
        block.servers[0].tenant_from,
        Some(TenantFrom::PathSegment(2))
    );
    assert_eq!(
        Config::from_yaml(MINIMAL).unwrap().servers[0].tenant_from,
        None
    );
    let unknown = err(&with("tenant_from: {cookie: t}"));
    assert!(unknown.contains("tenant_from"), "{unknown}");
}

/// SEP-2207: `offline_access` is for the authorization server, never in a challenge or PRM.
#[test]
fn offline_access_is_refused_in_scopes_supported_and_challenge_scopes() {
    let with = |line: &str| format!("{MINIMAL}    {line}\n");
    let e = err(&with("scopes_supported: [mcp:connect, offline_access]"));
    assert!(
        e.starts_with("key `servers[0].scopes_supported[1]`: `offline_access` is a refresh-token scope for the authorization server, not a scope of this resource"),
        "{e}"
    );
    assert!(e.contains("SEP-2207"), "{e}");
    let e = err(&with("challenge_scopes: [offline_access]"));
    assert!(
        e.starts_with("key `servers[0].challenge_scopes[0]`: `offline_access`"),
        "{e}"
    );
    // Scope tokens are case-sensitive (RFC 6749 s3.3): another token, left alone.
    Config::from_yaml(&with("scopes_supported: [Offline_Access]")).unwrap();
}

/// The forms docs/configuration.md shows.
#[test]
fn step_up_scope_defaults_to_operation() {
    let with = |line: &str| format!("{MINIMAL}    {line}\n");
    assert_eq!(
        Config::from_yaml(MINIMAL).unwrap().servers[0].step_up.scope,
        StepUpScope::Operation
    );
    let compat = Config::from_yaml(&with("step_up: {scope: granted_and_operation}")).unwrap();
    assert_eq!(
        compat.servers[0].step_up.scope,
        StepUpScope::GrantedAndOperation
    );
    let block = Config::from_yaml(&with("step_up:\n      scope: operation")).unwrap();
    assert_eq!(block.servers[0].step_up.scope, StepUpScope::Operation);
    let unknown = err(&with("step_up: {scope: granted}"));
    assert!(unknown.contains("granted_and_operation"), "{unknown}");
    let unknown = err(&with("step_up: {scopes: operation}"));
    assert!(unknown.contains("scopes"), "{unknown}");
    assert_eq!(
        "granted_and_operation".parse::<StepUpScope>().unwrap(),
        StepUpScope::GrantedAndOperation
    );
    assert_eq!(
        "replace".parse::<StepUpScope>().unwrap_err().to_string(),
        "`replace` is not a step-up scope rule: use `operation` or `granted_and_operation`"
    );
}

/// What validates must serve: a value with surrounding whitespace is refused with its key
/// (issue 11: an issuer with a trailing space validated, then never became ready).
/// Found by fuzzing (`config_load`): 5,000 unclosed `[` took the YAML scanner seconds.
#[test]
fn deeply_nested_flow_collections_are_refused_before_parsing() {
    let deep = format!("issuers: {}", "[".repeat(5000));
    let e = Config::from_yaml(&deep).unwrap_err();
    assert!(matches!(e, ConfigError::TooDeep { max: 64, .. }), "{e}");
    assert!(e.to_string().contains("nested more than 64 levels"), "{e}");
    // Ordinary flow collections still parse as before.
    let shallow = format!("issuers: {}", "[".repeat(10));
    assert!(matches!(
        Config::from_yaml(&shallow),
        Err(ConfigError::Parse { .. })
    ));
}

#[test]
fn values_with_surrounding_whitespace_are_refused() {
    let padded = MINIMAL.replace(
        "  - issuer: https://idp.example.com\n",
        "  - issuer: \"https://idp.example.com \"\n",
    );
    let e = err(&padded);
    assert!(e.contains("issuers[0].issuer"), "{e}");
    assert!(e.contains("whitespace"), "{e}");
    let padded = MINIMAL.replace(
        "[https://idp.example.com]",
        "[\" https://idp.example.com\"]",
    );
    let e = err(&padded);
    assert!(e.contains("servers[0].authorization_servers[0]"), "{e}");
}

#[test]
fn listeners_may_not_share_a_port() {
    let e = err(&format!(
        "{MINIMAL}listen: {{grpc: \"0.0.0.0:9191\", admin: \"127.0.0.1:9191\"}}\n"
    ));
    assert!(e.contains("listen.admin"), "{e}");
    assert!(Config::from_yaml(&format!("{MINIMAL}listen: {{grpc: \"127.0.0.1:0\", admin: \"127.0.0.1:0\", admin_grpc: \"127.0.0.1:0\"}}\n")).is_ok());
}

/// `MINIMAL` with these lines added to its issuer entry.
fn issuer_with(lines: &str) -> String {
    MINIMAL.replace(
        "  - issuer: https://idp.example.com\n",
        &format!("  - issuer: https://idp.example.com\n{lines}"),
    )
}

#[test]
fn a_preset_fills_the_defaults() {
    let c = Config::from_yaml(&issuer_with("    preset: entra\n")).unwrap();
    let i = &c.issuers[0];
    assert_eq!(i.preset, Some(Preset::Entra));
    assert_eq!(i.typ_policy(), TypPolicy::Relaxed);
    let m = i.claim_mapping();
    assert_eq!(m.subject, "oid");
    assert_eq!(m.tenant, Some("tid"));
    assert_eq!(m.groups, Some("roles"));
    assert_eq!(m.scopes.iter().collect::<Vec<_>>(), ["scp", "roles"]);
    assert_eq!(m.client_id.iter().collect::<Vec<_>>(), ["azp", "appid"]);
    assert!(i.requires_client_id());
    assert_eq!(i.audience_rule(), AudienceRule::Resource);
    assert_eq!(i.discovery(), Discovery::Oidc);
    assert_eq!(i.algorithms, vec![Algorithm::RS256]);

    let c = Config::from_yaml(&issuer_with("    preset: keycloak\n")).unwrap();
    let i = &c.issuers[0];
    assert_eq!(i.claim_mapping().groups, Some("/realm_access/roles"));
    assert_eq!(i.required_claims().collect::<Vec<_>>(), [("typ", "Bearer")]);

    // Without a preset: the RFC 9068 names and checks, as before presets existed.
    let c = Config::from_yaml(MINIMAL).unwrap();
    let i = &c.issuers[0];
    let m = i.claim_mapping();
    assert_eq!(m.subject, "sub");
    assert_eq!(m.tenant, None);
    assert_eq!(m.groups, Some("groups"));
    assert_eq!(m.scopes.iter().collect::<Vec<_>>(), ["scope", "scp"]);
    assert_eq!(m.client_id.iter().collect::<Vec<_>>(), ["client_id", "azp"]);
    assert!(!i.requires_client_id());
    assert_eq!(i.required_claims().count(), 0);
    assert_eq!(i.audience_rule(), AudienceRule::Resource);
    assert_eq!(i.discovery(), Discovery::Auto);
}

#[test]
fn what_the_issuer_entry_sets_wins_over_the_preset() {
    let c = Config::from_yaml(&issuer_with(
        "    preset: entra\n    typ: strict\n    algorithms: [ES256]\n    require_client_id: false\n    discovery: auto\n    claims: {subject: sub, scopes: [scp], tenant: null, groups: groups, client_id: [appid]}\n    required_claims: {ver: \"2.0\"}\n",
    ))
    .unwrap();
    let i = &c.issuers[0];
    assert_eq!(i.typ_policy(), TypPolicy::Strict);
    assert_eq!(i.algorithms, vec![Algorithm::ES256]);
    assert!(!i.requires_client_id());
    assert_eq!(i.discovery(), Discovery::Auto);
    let m = i.claim_mapping();
    assert_eq!(m.subject, "sub");
    // `null` switches the preset's tenant off; a missing key would have kept it.
    assert_eq!(m.tenant, None);
    assert_eq!(m.groups, Some("groups"));
    assert_eq!(m.scopes.iter().collect::<Vec<_>>(), ["scp"]);
    assert_eq!(m.client_id.iter().collect::<Vec<_>>(), ["appid"]);
    assert_eq!(i.required_claims().collect::<Vec<_>>(), [("ver", "2.0")]);

    // Required claims add to the preset's; the same claim takes the entry's value.
    let c = Config::from_yaml(&issuer_with(
        "    preset: cognito\n    client_ids: [app]\n    required_claims: {token_use: access, \"custom:tier\": gold}\n",
    ))
    .unwrap();
    let mut required = c.issuers[0].required_claims().collect::<Vec<_>>();
    required.sort();
    assert_eq!(required, [("custom:tier", "gold"), ("token_use", "access")]);
    let c = Config::from_yaml(&issuer_with(
        "    preset: keycloak\n    required_claims: {typ: Refresh}\n",
    ))
    .unwrap();
    assert_eq!(
        c.issuers[0].required_claims().collect::<Vec<_>>(),
        [("typ", "Refresh")]
    );
}

#[test]
fn preset_combinations_that_cannot_work_are_refused_by_key() {
    // Cognito access tokens have no `aud`: without `client_ids` nothing binds them to us.
    let e = err(&issuer_with("    preset: cognito\n"));
    assert!(e.contains("issuers[0].client_ids"), "{e}");
    let e = err(&issuer_with("    audience_rule: client_id\n"));
    assert!(e.contains("issuers[0].client_ids"), "{e}");
    let e = err(&issuer_with(
        "    preset: cognito\n    client_ids: [\"\"]\n",
    ));
    assert!(e.contains("issuers[0].client_ids[0]"), "{e}");
    // A client must be named, and no claim is mapped to name it.
    let e = err(&issuer_with(
        "    preset: okta\n    claims: {client_id: []}\n",
    ));
    assert!(e.contains("issuers[0].claims.client_id"), "{e}");
    let e = err(&issuer_with(
        "    client_ids: [a]\n    claims: {client_id: []}\n",
    ));
    assert!(e.contains("issuers[0].claims.client_id"), "{e}");
    // JSON Pointers: `~` only as `~0`/`~1` (RFC 6901 s3).
    let e = err(&issuer_with(
        "    claims: {groups: /realm_access/~2roles}\n",
    ));
    assert!(e.contains("issuers[0].claims.groups"), "{e}");
    let e = err(&issuer_with("    required_claims: {\"/a~\": x}\n"));
    assert!(e.contains("issuers[0].required_claims./a~"), "{e}");
    let e = err(&issuer_with("    claims: {subject: \"\"}\n"));
    assert!(e.contains("issuers[0].claims.subject"), "{e}");
    // Unknown presets and keys are refused by name.
    let e = err(&issuer_with("    preset: ping\n"));
    assert!(e.contains("preset") && e.contains("okta"), "{e}");
    let e = err(&issuer_with("    audience_rule: none\n"));
    assert!(e.contains("audience_rule"), "{e}");
    let e = err(&MINIMAL.replace(
        "    authorization_servers:",
        "    audiences: [\"\"]\n    authorization_servers:",
    ));
    assert!(e.contains("servers[0].audiences[0]"), "{e}");
}

#[test]
fn upstream_identity_is_off_by_default_and_validated_with_the_key_named() {
    let c = Config::from_yaml(MINIMAL).unwrap();
    assert!(c.upstream_identity.is_none());
    assert!(c.servers[0].upstream_identity.is_none());

    let with = |section: &str, server: &str| {
        format!(
            "{}{section}\n",
            MINIMAL.replace(
                "    authorization_servers: [https://idp.example.com]\n",
                &format!("    authorization_servers: [https://idp.example.com]\n{server}"),
            )
        )
    };
    let server = "    upstream_identity: {audience: http://weather:8080}\n";
    let section = "upstream_identity:\n  issuer: http://mcp-authz:9090\n  keys: {generate: {}}";
    let c = Config::from_yaml(&with(section, server)).unwrap();
    let u = c.upstream_identity.unwrap();
    assert_eq!(u.header, "x-mcp-authz-identity");
    assert_eq!(u.lifetime, Duration::from_secs(60));
    assert_eq!(
        u.keys,
        UpstreamKeys::Generate(GenerateKeys {
            rotate_every: Duration::from_secs(3600),
            algorithm: SigningAlgorithm::ES256,
        })
    );
    assert_eq!(
        c.servers[0].upstream_identity.as_ref().unwrap().audience,
        "http://weather:8080"
    );
    let c = Config::from_yaml(&with(
        "upstream_identity:\n  issuer: http://mcp-authz:9090\n  keys: {dir: /keys}\n  lifetime: 30s",
        "",
    ))
    .unwrap();
    assert_eq!(
        c.upstream_identity.unwrap().keys,
        UpstreamKeys::Dir("/keys".into())
    );

    for (yaml, key) in [
        (with("", server), "servers[0].upstream_identity"),
        (
            with(section, "    upstream_identity: {audience: \"\"}\n"),
            "servers[0].upstream_identity.audience",
        ),
        (
            with(
                &section.replace("http://mcp-authz:9090", "mcp-authz"),
                server,
            ),
            "upstream_identity.issuer",
        ),
        (
            with(&format!("{section}\n  lifetime: 2h"), server),
            "upstream_identity.lifetime",
        ),
        (
            with(&format!("{section}\n  header: x-mcp-authz-subject"), server),
            "upstream_identity.header",
        ),
        (
            with(&format!("{section}\n  header: X-Identity"), server),
            "upstream_identity.header",
        ),
        (
            with(
                &section.replace("{generate: {}}", "{generate: {rotate_every: 1m}}"),
                server,
            ),
            "upstream_identity.keys.generate.rotate_every",
        ),
        (
            with(
                &format!(
                    "{}\n  lifetime: 1h",
                    section.replace("{generate: {}}", "{generate: {rotate_every: 30m}}")
                ),
                server,
            ),
            "upstream_identity.keys.generate.rotate_every",
        ),
    ] {
        let e = err(&yaml);
        assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
    }
    // Unknown keys, in the section, in `keys` and per server.
    for (yaml, unknown) in [
        (with(&format!("{section}\n  bogus: 1"), server), "bogus"),
        (
            with(
                &section.replace("{generate: {}}", "{generate: {every: 1h}}"),
                server,
            ),
            "every",
        ),
        (
            with(&section.replace("{generate: {}}", "{files: /k}"), server),
            "files",
        ),
        (
            with(section, "    upstream_identity: {audience: a, aud: b}\n"),
            "aud",
        ),
    ] {
        let e = err(&yaml);
        assert!(e.contains(unknown), "{unknown}: {e}");
    }
}
