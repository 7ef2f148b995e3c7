use super::*;

fn op(toml_text: &str) -> OpSpec {
    toml::from_str(toml_text).unwrap()
}

fn deploy() -> OpSpec {
    op(r#"
name = "deploy"
runner = { type = "exec", argv = ["deploy.sh", "{service}", "--env={env}"] }
lock = "deploy:{env}"
[[params]]
name = "service"
type = "enum"
values = ["api", "web"]
[[params]]
name = "env"
type = "string"
pattern = "[a-z]+"
[[params]]
name = "replicas"
type = "int"
min = 1
max = 10
default = 2
[[params]]
name = "token"
type = "secret"
required = false
"#)
}

#[test]
fn control_characters_are_refused_without_echoing_the_value() {
    let p: ParamSpec = toml::from_str("name = \"token\"\ntype = \"secret\"").unwrap();
    for (raw, what) in [
        ("ab\0cd", "U+0000 is not allowed (character 3"),
        ("\u{1b}[2J", "U+001B"),
    ] {
        let err = p.parse_value(raw).unwrap_err();
        assert!(err.contains(what), "{err}");
        assert!(!err.contains("ab") && !err.contains("[2J"), "echoed: {err}");
    }
    assert!(p.parse_value("line one\nline two\ttabbed").is_ok());
}

#[test]
fn validates_every_problem_at_once() {
    let spec = deploy();
    assert!(spec.check().is_empty(), "{:?}", spec.check());
    let errs = spec
        .validate_args(&[
            ("service".into(), "apu".into()),
            ("replicas".into(), "11".into()),
            ("colour".into(), "red".into()),
        ])
        .unwrap_err();
    assert_eq!(errs.len(), 4, "{errs:?}");
    assert!(errs[0].contains("did you mean `api`"), "{errs:?}");
    assert!(errs[1].contains("above the maximum 10"), "{errs:?}");
    assert!(errs[2].contains("unknown parameter `colour`"), "{errs:?}");
    assert!(errs[3].contains("missing parameter `env`"), "{errs:?}");
}

#[test]
fn defaults_fill_in() {
    let args = deploy()
        .validate_args(&[
            ("service".into(), "api".into()),
            ("env".into(), "prod".into()),
        ])
        .unwrap();
    assert_eq!(args["replicas"], Value::Int(2));
    assert!(!args.contains_key("token"));
}

#[test]
fn checks_placeholders_and_names() {
    let bad = op(r#"
name = "Bad!"
runner = { type = "exec", argv = ["{x}", "{nope}"] }
"#);
    let errs = bad.check();
    assert!(errs.iter().any(|e| e.contains("bad op name")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("argv[0]")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("`{nope}`")), "{errs:?}");
}

#[test]
fn secrets_cannot_name_a_lock() {
    let mut spec = deploy();
    spec.lock = Some("deploy:{token}".into());
    let errs = spec.check();
    assert!(
        errs.iter().any(|e| e.contains("uses the secret `{token}`")),
        "{errs:?}"
    );
}

#[test]
fn typed_values() {
    let p = |ty: &str| -> ParamSpec {
        toml::from_str(&format!("name = \"p\"\ntype = \"{ty}\"")).unwrap()
    };
    assert_eq!(p("bool").parse_value("yes"), Ok(Value::Bool(true)));
    assert!(p("bool").parse_value("maybe").is_err());
    assert!(p("email").parse_value("a@example.com").is_ok());
    assert!(p("email").parse_value("not-an-email").is_err());
    assert!(p("duration").parse_value("1h30m").is_ok());
    assert!(p("duration").parse_value("soon").is_err());
    assert!(p("int").parse_value("x").is_err());
}

#[test]
fn templates() {
    assert_eq!(placeholders("a{x}b{{c}}{y}"), vec!["x", "y"]);
    let out = render_template("deploy:{env}:{{lit}}:{missing}", |n| {
        (n == "env").then(|| "prod".to_string())
    });
    assert_eq!(out, "deploy:prod:{lit}:{missing}");
}
