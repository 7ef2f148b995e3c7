use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let env = |k: &str| (k == "PORT").then(|| "9999".to_string());
    Config::parse_with(text, Path::new("/etc/youops"), "youops.toml", &env, &check)
}

#[test]
fn a_good_section_is_read_with_its_variables() {
    let cfg = parse("[server]\nlisten = \"127.0.0.1:${PORT}\"\nbody_limit = \"1KiB\"\n").unwrap();
    let server = ServerConfig::of(&cfg).unwrap();
    assert_eq!(server.listen, "127.0.0.1:9999");
    assert_eq!(server.body_limit.0, 1024);
    assert_eq!(
        ServerConfig::of(&parse("").unwrap()).unwrap(),
        ServerConfig::default()
    );
}

#[test]
fn problems_join_the_others_with_the_same_texts_and_lines() {
    let bad = "[server]\nlisten = \"nowhere\"\n\n[extra]\nx = 1\n";
    let errs = parse(bad).unwrap_err();
    let text = errs.to_string();
    assert_eq!(errs.issues.len(), 2, "{text}");
    assert!(text.contains("line 4: extra: unknown key"), "{text}");
    assert!(
        text.contains("youops.toml:server.listen: `nowhere` is not an address like 127.0.0.1:8080"),
        "{text}"
    );
    let errs = parse("x = 1\n\n[server]\ncolour = 1\n").unwrap_err();
    assert_eq!(errs.issues[1].line, Some(3), "{errs}");
    assert!(
        errs.issues[1]
            .to_string()
            .starts_with("line 3: server: unknown field `colour`, expected one of `listen`"),
        "{errs}"
    );
    let errs = parse("\nserver = 3\n").unwrap_err();
    assert_eq!(
        errs.issues[0].to_string(),
        "line 2: server: invalid type: integer `3`, expected struct ServerConfig"
    );
    let errs = parse("[server]\nlisten = \"${NOPE}\"\n").unwrap_err();
    assert_eq!(errs.issues.len(), 1, "{errs}");
    assert_eq!(
        errs.issues[0].to_string(),
        "line 1: server.listen: environment variable `NOPE` is not set"
    );
}

#[test]
fn core_alone_does_not_check_the_section() {
    let cfg = Config::parse(
        "[server]\ncolour = 1\nlisten = \"x\"\n",
        Path::new("/"),
        "t",
        &|_| None,
    )
    .unwrap();
    assert!(ServerConfig::of(&cfg).is_err());
}

/// docs/configuration.md lists every key of `[server]`.
#[test]
fn configuration_doc_lists_every_key() {
    let doc = include_str!("../../../../docs/configuration.md");
    let v = toml::Value::try_from(ServerConfig::default()).unwrap();
    for k in v.as_table().unwrap().keys() {
        assert!(
            doc.contains(&format!("`{k}`")),
            "docs/configuration.md does not mention `{k}`"
        );
    }
}
