//! Unit tests of the issue forms: generation, parsing, and the round trip.

use super::*;
use proptest::prelude::*;
use youops_core::catalog::{Catalog, OpSpec};

fn op(text: &str) -> OpSpec {
    toml::from_str(text).unwrap()
}

fn deploy() -> OpSpec {
    op(r#"
name = "app.deploy"
description = "Deploy a version"
runner = { type = "builtin", name = "x" }
approvals = 1
params = [
  { name = "env", type = "enum", values = ["staging", "prod"], default = "staging" },
  { name = "version", type = "string", description = "Version to deploy" },
  { name = "replicas", type = "int", min = 1, required = false },
  { name = "notify", type = "bool", default = false },
  { name = "verify", type = "bool", default = true },
  { name = "owner", type = "email", required = false },
  { name = "note", type = "string", required = false },
  { name = "api_key", type = "secret", required = false },
]
"#)
}

/// What GitHub renders from a submitted form: the `### label` sections of the
/// YAML's non-markdown fields, in order.
fn render(yaml: &str, answers: &dyn Fn(&str) -> Option<String>) -> String {
    let form: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    let mut out = Vec::new();
    for el in form["body"].as_sequence().unwrap() {
        let ty = el["type"].as_str().unwrap();
        if ty == "markdown" {
            continue;
        }
        let label = el["attributes"]["label"].as_str().unwrap();
        let value = match ty {
            "checkboxes" => el["attributes"]["options"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|o| {
                    let l = o["label"].as_str().unwrap();
                    let on = answers(label).as_deref() == Some("true");
                    format!("- [{}] {l}", if on { "X" } else { " " })
                })
                .collect::<Vec<_>>()
                .join("\n"),
            "dropdown" => {
                let opts: Vec<String> = el["attributes"]["options"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|o| o.as_str().unwrap().to_string())
                    .collect();
                answers(label)
                    .or_else(|| {
                        el["attributes"]["default"]
                            .as_u64()
                            .map(|i| opts[i as usize].clone())
                    })
                    .unwrap_or_else(|| NO_RESPONSE.into())
            }
            _ => answers(label).unwrap_or_else(|| NO_RESPONSE.into()),
        };
        out.push(format!("### {label}\n\n{value}"));
    }
    out.join("\n\n")
}

#[test]
fn form_follows_the_issue_form_schema() {
    let yaml = issue_form(&deploy()).unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(v["name"].as_str(), Some("app.deploy"));
    assert_eq!(v["description"].as_str(), Some("Deploy a version"));
    assert_eq!(v["title"].as_str(), Some("[youops] app.deploy"));
    let body = v["body"].as_sequence().unwrap();
    let kinds: Vec<(&str, Option<&str>)> = body
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["attributes"]["label"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("markdown", None),
            ("dropdown", Some(OP_LABEL)),
            ("dropdown", Some("env")),
            ("input", Some("version")),
            ("input", Some("replicas")),
            ("checkboxes", Some("notify")),
            ("dropdown", Some("verify")),
            ("input", Some("owner")),
            ("input", Some("note")),
        ]
    );
    // No secret is ever asked for; the form says so.
    assert!(!yaml.contains("id: api_key"));
    assert!(body[0]["attributes"]["value"]
        .as_str()
        .unwrap()
        .contains("api_key"));
    assert_eq!(body[2]["attributes"]["default"].as_u64(), Some(0));
    assert_eq!(body[3]["validations"]["required"].as_bool(), Some(true));
    assert_eq!(body[4]["validations"]["required"].as_bool(), Some(false));
    assert!(body[5].get("validations").is_none());
    assert_eq!(
        body[5]["attributes"]["options"][0]["label"].as_str(),
        Some(CHECKBOX_TEXT)
    );
    // ids are unique and legal.
    let ids: Vec<&str> = body.iter().filter_map(|e| e["id"].as_str()).collect();
    let mut dedup = ids.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(ids.len(), dedup.len());
}

#[test]
fn ops_needing_secrets_or_opting_out_get_no_form() {
    let secret = op(r#"
name = "db.rotate"
runner = { type = "builtin", name = "x" }
[[params]]
name = "password"
type = "secret"
"#);
    assert!(issue_form(&secret)
        .unwrap_err()
        .to_string()
        .contains("password"));
    let out = op(r#"
name = "quiet"
runner = { type = "builtin", name = "x" }
[frontend.github]
form = false
"#);
    assert!(issue_form(&out).is_err());
    let cat = Catalog::new(vec![secret, out, deploy()]).unwrap();
    let forms = issue_forms(&cat);
    assert_eq!(forms.len(), 1);
    assert_eq!(forms[0].0, "app.deploy.yml");
}

#[test]
fn parses_every_field_kind_from_a_rendered_body() {
    let body = "### YouOps operation\r\n\r\napp.deploy\r\n\r\n### env\r\n\r\nprod\r\n\r\n### version\r\n\r\n1.2.3, with commas\r\n\r\n### replicas\r\n\r\n_No response_\r\n\r\n### notify\r\n\r\n- [x] yes\r\n\r\n### verify\r\n\r\nfalse\r\n\r\n### owner\r\n\r\n_No response_\r\n\r\n### note\r\n\r\nline one\r\n### version\r\n\r\n#### not a field\r\nlast";
    let args = parse_issue_form(body, &deploy()).unwrap();
    assert_eq!(
        args,
        vec![
            ("env".into(), "prod".into()),
            ("version".into(), "1.2.3, with commas".into()),
            ("notify".into(), "true".into()),
            ("verify".into(), "false".into()),
            (
                "note".into(),
                "line one\n### version\n\n#### not a field\nlast".into()
            ),
        ]
    );
    let unchecked = body.replace("- [x] yes", "- [ ] yes");
    let args = parse_issue_form(&unchecked, &deploy()).unwrap();
    assert!(args.contains(&("notify".into(), "false".into())));
    let upper = body.replace("- [x] yes", "- [X] yes");
    let args = parse_issue_form(&upper, &deploy()).unwrap();
    assert!(args.contains(&("notify".into(), "true".into())));
}

#[test]
fn a_body_from_another_form_or_no_form_is_an_error() {
    let errs = parse_issue_form("just some text\n### Heading", &deploy()).unwrap_err();
    assert!(errs[0].contains("not from the `app.deploy` form"));
    let errs = parse_issue_form(
        "### YouOps operation\n\nother.op\n\n### env\n\nprod",
        &deploy(),
    )
    .unwrap_err();
    assert!(errs[0].contains("other.op"));
    assert_eq!(
        form_op("### YouOps operation\r\n\r\nother.op\r\n\r\n### env\r\n\r\nprod").as_deref(),
        Some("other.op")
    );
    assert_eq!(form_op("### Something\n\nx"), None);
}

#[test]
fn the_generated_form_renders_and_parses_back() {
    let yaml = issue_form(&deploy()).unwrap();
    let body = render(&yaml, &|label| match label {
        "version" => Some("v9".into()),
        "notify" => Some("true".into()),
        "note" => Some("a, b\n\n### env\n\nnot a section".into()),
        _ => None,
    });
    let args = parse_issue_form(&body, &deploy()).unwrap();
    let op = deploy();
    let typed = op.validate_args(&args).unwrap();
    assert_eq!(typed["env"].as_text(), "staging");
    assert_eq!(typed["version"].as_text(), "v9");
    assert_eq!(typed["notify"].as_text(), "true");
    assert_eq!(typed["verify"].as_text(), "true");
    assert_eq!(typed["note"].as_text(), "a, b\n\n### env\n\nnot a section");
    assert!(!typed.contains_key("replicas"));
}

fn arb_value() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-zA-Z0-9 ,.:;_=-]{1,20}",
            Just("### p0".to_string()),
            Just("### p1".to_string()),
            Just("### YouOps operation".to_string()),
            Just("- [X] yes".to_string()),
            Just(String::new()),
            Just("#### deeper".to_string()),
        ],
        1..5,
    )
    .prop_map(|lines| lines.join("\n").trim().to_string())
    .prop_filter("non-empty", |s| !s.is_empty() && s != NO_RESPONSE)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parser_never_panics(body in "(?s).{0,400}") {
        let _ = parse_issue_form(&body, &deploy());
        let _ = form_op(&body);
    }

    #[test]
    fn parser_never_panics_on_near_forms(parts in prop::collection::vec(prop_oneof![
        Just("### YouOps operation".to_string()), Just("### env".to_string()),
        Just("### notify".to_string()), Just("- [x]".to_string()), Just("- [".to_string()),
        Just("\r\n".to_string()), Just("_No response_".to_string()), "[^\n]{0,10}"
    ], 0..30)) {
        let body = parts.join("\n");
        let _ = parse_issue_form(&body, &deploy());
    }

    #[test]
    fn round_trip_for_generated_forms(
        kinds in prop::collection::vec(0u8..4, 1..6),
        answers in prop::collection::vec(prop::option::of(arb_value()), 6),
        checks in prop::collection::vec(any::<bool>(), 6),
        crlf in any::<bool>(),
    ) {
        // An op with params p0..pN of generated kinds.
        let mut text = String::from("name = \"gen.op\"\nrunner = { type = \"builtin\", name = \"x\" }\n");
        for (i, k) in kinds.iter().enumerate() {
            let spec = match k {
                0 => "type = \"string\"\nrequired = false".to_string(),
                1 => "type = \"enum\"\nvalues = [\"a\", \"b, c\", \"d\"]\nrequired = false".to_string(),
                2 => "type = \"bool\"\ndefault = false".to_string(),
                _ => "type = \"int\"\nrequired = false".to_string(),
            };
            text.push_str(&format!("[[params]]\nname = \"p{i}\"\n{spec}\n"));
        }
        let op = op(&text);
        let yaml = issue_form(&op).unwrap();
        let expected: Vec<(String, Option<String>)> = kinds.iter().enumerate().map(|(i, k)| {
            let name = format!("p{i}");
            let v = match k {
                0 => answers[i].clone().filter(|v| !v.lines().any(|l| l.trim() == format!("### {name}"))),
                1 => answers[i].as_ref().map(|_| ["a", "b, c", "d"][i % 3].to_string()),
                2 => Some(checks[i].to_string()),
                _ => answers[i].as_ref().map(|_| (i as i64 * 7 - 3).to_string()),
            };
            (name, v)
        }).collect();
        let mut body = render(&yaml, &|label| {
            expected.iter().find(|(n, _)| n == label).and_then(|(_, v)| v.clone())
        });
        if crlf {
            body = body.replace('\n', "\r\n");
        }
        let got = parse_issue_form(&body, &op).unwrap();
        let want: Vec<(String, String)> = expected
            .into_iter()
            .filter_map(|(n, v)| v.map(|v| (n, v)))
            .collect();
        prop_assert_eq!(got, want);
    }
}
