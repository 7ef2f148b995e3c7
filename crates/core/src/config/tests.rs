use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:9999"

[executor]
output_limit = "1KiB"
approval_ttl = "10m"

[[ops]]
name = "deploy"
description = "Deploy a service"
runner = { type = "exec", argv = ["./deploy.sh", "{service}"] }
lock = "deploy:{service}"
approvals = 1
[[ops.params]]
name = "service"
type = "enum"
values = ["api", "web"]

[principals.alice]
roles = ["ops"]
identities = { cli = ["alice"] }
tokens = ["${ALICE_TOKEN}"]

[principals.bob]
roles = ["ops"]

[[grants]]
roles = ["ops"]
ops = ["*"]

[frontends.slack]
signing_secret = "x"
"#;

fn env(k: &str) -> Option<String> {
    (k == "ALICE_TOKEN").then(|| "alice-secret-token-123".to_string())
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, Path::new("/etc/youops"), "youops.toml", &env)
}

#[test]
fn good_config_loads() {
    let cfg = parse(GOOD).unwrap();
    assert_eq!(cfg.ops.len(), 1);
    assert_eq!(cfg.executor.output_limit.0, 1024);
    assert_eq!(
        cfg.principals["alice"].tokens,
        vec!["alice-secret-token-123"]
    );
    assert_eq!(
        cfg.policy().resolve_token("alice-secret-token-123"),
        Some("alice")
    );
    assert!(cfg.frontend("slack").is_some());
    assert_eq!(cfg.store_path(), Path::new("/etc/youops/youops-data"));
}

#[test]
fn every_problem_at_once_with_lines() {
    let bad = r#"
[server]
listen = "nowhere"

[[ops]]
name = "deploy"
runner = { type = "exec", argv = ["./deploy.sh", "{servce}"] }
[[ops.params]]
name = "service"
tpye = "enum"

[[ops]]
name = "flush"
runner = { type = "teleport" }

[principals.alice]
roles = ["ops"]
tokens = ["${MISSING_TOKEN}"]

[[grants]]
roles = []
ops = ["*"]

[extra]
x = 1
"#;
    let errs = parse(bad).unwrap_err();
    let text = errs.to_string();
    assert!(errs.issues.len() >= 5, "{text}");
    assert!(text.contains("line 24: extra: unknown key"), "{text}");
    assert!(text.contains("ops[0] (deploy)"), "{text}");
    assert!(text.contains("tpye"), "{text}");
    assert!(text.contains("teleport"), "{text}");
    assert!(text.contains("MISSING_TOKEN` is not set"), "{text}");
    assert!(text.contains("grants[0]: `roles` is empty"), "{text}");
    // `[server]` is the daemon's to check, not core's.
    assert!(!text.contains("server.listen"), "{text}");
    // the op with a bad param is reported on its own line
    let deploy = errs
        .issues
        .iter()
        .find(|i| i.path.contains("deploy"))
        .unwrap();
    assert_eq!(deploy.line, Some(5), "{text}");
}

#[test]
fn syntax_error_has_a_line() {
    let errs = parse("[server]\nlisten = \"x\n").unwrap_err();
    assert_eq!(errs.issues.len(), 1);
    assert_eq!(errs.issues[0].line, Some(2), "{errs}");
}

#[test]
fn env_expansion() {
    let e = |k: &str| (k == "A").then(|| "1".to_string());
    assert_eq!(expand_env("x${A}y", &e).unwrap(), "x1y");
    assert_eq!(expand_env("$${A}", &e).unwrap(), "${A}");
    assert_eq!(expand_env("cost $5", &e).unwrap(), "cost $5");
    assert!(expand_env("${B}", &e).is_err());
    assert!(expand_env("${A", &e).is_err());
    assert_eq!(expand_env("${B:-fallback}", &e).unwrap(), "fallback");
    assert_eq!(expand_env("${A:-fallback}", &e).unwrap(), "1");
}

#[test]
fn placeholder_error_is_semantic() {
    let text = GOOD.replace("{service}\"]", "{servce}\"]");
    let errs = parse(&text).unwrap_err();
    assert!(errs.to_string().contains("`{servce}`"), "{errs}");
}

#[test]
fn server_is_kept_raw_and_expanded_with_its_lines() {
    let text = "[executor]\n\n[server]\nlisten = \"${ALICE_TOKEN}\"\ncolour = 1\n";
    let cfg = parse(text).unwrap();
    let server = cfg.server.as_ref().and_then(|s| s.as_table()).unwrap();
    assert_eq!(server["listen"].as_str(), Some("alice-secret-token-123"));
    assert_eq!(server["colour"].as_integer(), Some(1));
    assert_eq!(cfg.line_of("server"), Some(3));
    assert_eq!(cfg.line_of("server.colour"), Some(5));
    let errs = parse("[server]\nlisten = \"${MISSING}\"\n").unwrap_err();
    assert_eq!(errs.issues[0].line, Some(1), "{errs}");
    assert_eq!(errs.issues[0].path, "server.listen", "{errs}");
    assert!(parse("").unwrap().server.is_none());
}

#[test]
fn extra_checks_join_the_other_problems() {
    let extra = |cfg: &Config| {
        vec![ConfigIssue {
            line: cfg.line_of("server"),
            path: "server".into(),
            message: format!("{:?}", cfg.server.is_some()),
        }]
    };
    let errs =
        Config::parse_with("[extra]\n[server]\n", Path::new("/"), "t", &env, &extra).unwrap_err();
    assert_eq!(errs.issues.len(), 2, "{errs}");
    assert_eq!(errs.issues[1].to_string(), "line 2: server: true");
}
