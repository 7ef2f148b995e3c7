use super::*;

/// docs/configuration.md lists every key of the config structs (`[server]`'s
/// are the daemon's, checked there).
#[test]
fn configuration_doc_lists_every_key() {
    let doc = include_str!("../../../../docs/configuration.md");
    let mut keys: Vec<String> = Vec::new();
    for v in [
        toml::Value::try_from(StoreConfig::default()),
        toml::Value::try_from(ExecutorConfig::default()),
    ] {
        if let toml::Value::Table(t) = v.unwrap() {
            keys.extend(t.keys().cloned());
        }
    }
    // Op, param and policy structs: every field, via a fully populated example.
    let op: crate::catalog::OpSpec = toml::from_str(
        r#"
name = "x"
description = "d"
runner = { type = "builtin", name = "b" }
timeout = "1s"
roles = ["r"]
approvals = 1
approvers = ["r"]
approval_ttl = "1m"
lock = "l"
lock_mode = "refuse"
output_limit = 100
frontend = { github = { close_on_success = true } }
[[params]]
name = "p"
type = "int"
description = "d"
required = false
default = 1
pattern = "x"
values = ["a"]
min = 0
max = 2
"#,
    )
    .unwrap();
    let v = toml::Value::try_from(&op).unwrap();
    let t = v.as_table().unwrap();
    keys.extend(t.keys().cloned());
    keys.extend(
        t["params"].as_array().unwrap()[0]
            .as_table()
            .unwrap()
            .keys()
            .cloned(),
    );
    let p = toml::Value::try_from(crate::policy::PrincipalSpec::default()).unwrap();
    keys.extend(p.as_table().unwrap().keys().cloned());
    let g = toml::Value::try_from(crate::policy::GrantSpec::default()).unwrap();
    keys.extend(g.as_table().unwrap().keys().cloned());
    keys.extend(TOP_KEYS.iter().map(|s| s.to_string()));
    for k in keys {
        assert!(
            doc.contains(&format!("`{k}`"))
                || doc.contains(&format!("[{k}]"))
                || doc.contains(&format!("[[{k}]]"))
                || doc.contains(&format!("[{k}.")),
            "docs/configuration.md does not mention `{k}`"
        );
    }
}
