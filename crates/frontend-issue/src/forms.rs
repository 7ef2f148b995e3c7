//! GitHub issue forms: one template per op ([`issue_forms`]), and the parser that
//! turns the markdown GitHub renders from a filled-in form back into arguments
//! ([`parse_issue_form`]).
//!
//! # The form
//!
//! Each form follows GitHub's issue-form schema (`name`, `description`, `title`,
//! `labels`, `body` of `markdown` / `dropdown` / `checkboxes` / `input` elements,
//! each with `id`, `attributes.label` and `validations.required`). Its first
//! field is a dropdown labelled [`OP_LABEL`] with the op name as its only
//! (pre-selected) option: GitHub renders it into the issue body, so the body itself
//! names the op (labels a form sets are dropped when they do not exist in the
//! repository, and titles are free text). Every other field is labelled with the
//! param name:
//!
//! | param type | form element |
//! |---|---|
//! | `enum` | `dropdown` with the values (default pre-selected) |
//! | `bool` | `checkboxes` with one box (unchecked = `false`); a bool whose default is `true` becomes a `true`/`false` dropdown, since a checkbox cannot start checked |
//! | `int`, `string`, `email`, `duration` | `input` (default as the pre-filled value) |
//! | `secret` | never asked: issues are public and keep their edit history |
//!
//! Ops with a *required* secret parameter get no form at all (they cannot be
//! requested from an issue); optional secret parameters are left out of the form
//! and the form says so. `[ops.frontend.github] form = false` leaves an op out too.
//!
//! # The rendered body
//!
//! GitHub renders a submitted form as `### <label>` sections separated by blank
//! lines: the value, `_No response_` for an empty field, `- [X] label` / `- [ ] label`
//! lines for checkboxes. The parser accepts CRLF line ends, `[x]` and `[X]`, values
//! with commas, and `### ...` lines typed inside a value (see [`parse_issue_form`]).

use serde::Serialize;
use youops_core::catalog::{Catalog, OpSpec, ParamSpec, ParamType};

/// The label of the field that names the op in every form.
pub const OP_LABEL: &str = "YouOps operation";
/// What GitHub writes for a field left empty.
pub const NO_RESPONSE: &str = "_No response_";
/// The label every form puts on its issues (create it in the repository).
pub const FORM_LABEL: &str = "youops";
/// The text of the single checkbox of a `bool` param.
pub const CHECKBOX_TEXT: &str = "yes";

#[derive(Serialize)]
struct Form {
    name: String,
    description: String,
    title: String,
    labels: Vec<String>,
    body: Vec<Element>,
}

#[derive(Serialize)]
struct Element {
    #[serde(rename = "type")]
    ty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    attributes: Attributes,
    #[serde(skip_serializing_if = "Option::is_none")]
    validations: Option<Validations>,
}

#[derive(Serialize, Default)]
struct Attributes {
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    placeholder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<Vec<FormOption>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    default: Option<usize>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum FormOption {
    Plain(String),
    Checkbox { label: String },
}

#[derive(Serialize)]
struct Validations {
    required: bool,
}

/// Why an op gets no issue form, or `None` when it gets one.
pub fn form_exclusion(op: &OpSpec) -> Option<String> {
    let opted_out = op
        .frontend
        .get("github")
        .and_then(|t| t.get("form"))
        .and_then(toml::Value::as_bool)
        == Some(false);
    if opted_out {
        return Some("`[ops.frontend.github] form = false`".into());
    }
    let required_secrets: Vec<&str> = op
        .params
        .iter()
        .filter(|p| p.is_secret() && p.is_required())
        .map(|p| p.name.as_str())
        .collect();
    if !required_secrets.is_empty() {
        return Some(format!(
            "it needs the secret parameter(s) {}, and secrets are never asked for in an issue (issues are public and keep their edit history)",
            required_secrets.join(", ")
        ));
    }
    None
}

/// The form fields of `op`, in order: the params an issue may set.
pub fn form_params(op: &OpSpec) -> impl Iterator<Item = &ParamSpec> {
    op.params.iter().filter(|p| !p.is_secret())
}

fn bool_as_dropdown(p: &ParamSpec) -> bool {
    p.ty == ParamType::Bool && matches!(p.default_value(), Ok(Some(youops_core::Value::Bool(true))))
}

fn default_text(p: &ParamSpec) -> Option<String> {
    p.default_value().ok().flatten().map(|v| v.as_text())
}

fn field_description(p: &ParamSpec) -> String {
    let mut parts = Vec::new();
    if !p.description.is_empty() {
        parts.push(p.description.trim_end_matches('.').to_string());
    }
    let mut kind = format!("Type: {}", p.type_hint());
    if let Some(pat) = &p.pattern {
        kind.push_str(&format!(", matching `{}`", pat.source));
    }
    parts.push(kind);
    match default_text(p) {
        Some(d) => parts.push(format!("Default: `{d}`")),
        None if !p.is_required() => parts.push("Optional".into()),
        None => {}
    }
    let mut s = parts.join(". ");
    s.push('.');
    s
}

fn element_for(p: &ParamSpec) -> Element {
    let required = p.is_required() && p.default.is_none();
    let description = Some(field_description(p));
    match p.ty {
        ParamType::Enum => Element {
            ty: "dropdown",
            id: Some(p.name.clone()),
            attributes: Attributes {
                label: Some(p.name.clone()),
                description,
                default: default_text(p).and_then(|d| p.values.iter().position(|v| *v == d)),
                options: Some(p.values.iter().cloned().map(FormOption::Plain).collect()),
                ..Default::default()
            },
            validations: Some(Validations { required }),
        },
        ParamType::Bool if bool_as_dropdown(p) => Element {
            ty: "dropdown",
            id: Some(p.name.clone()),
            attributes: Attributes {
                label: Some(p.name.clone()),
                description,
                options: Some(vec![
                    FormOption::Plain("true".into()),
                    FormOption::Plain("false".into()),
                ]),
                default: Some(0),
                ..Default::default()
            },
            validations: Some(Validations { required: false }),
        },
        // A required checkbox would mean "must be checked"; a bool is never that.
        ParamType::Bool => Element {
            ty: "checkboxes",
            id: Some(p.name.clone()),
            attributes: Attributes {
                label: Some(p.name.clone()),
                description,
                options: Some(vec![FormOption::Checkbox {
                    label: CHECKBOX_TEXT.into(),
                }]),
                ..Default::default()
            },
            validations: None,
        },
        _ => Element {
            ty: "input",
            id: Some(p.name.clone()),
            attributes: Attributes {
                label: Some(p.name.clone()),
                description,
                placeholder: match p.ty {
                    ParamType::Email => Some("name@example.com".into()),
                    ParamType::Duration => Some("30m".into()),
                    ParamType::Int => Some(p.min.unwrap_or(0).to_string()),
                    _ => None,
                },
                value: default_text(p),
                ..Default::default()
            },
            validations: Some(Validations { required }),
        },
    }
}

fn form_for(op: &OpSpec) -> Form {
    let mut intro = format!("**`{}`**", op.name);
    if !op.description.is_empty() {
        intro.push_str(&format!(": {}", op.description));
    }
    intro.push_str("\n\nFill in the fields and submit: YouOps validates the request, checks who you are and what you may run, and answers in a comment on the issue. Edit the issue to fix a rejected request; editing it while it waits for approval withdraws the pending request.");
    if op.approvals > 0 {
        intro.push_str(&format!(
            "\n\nThis operation needs {} approval(s) by someone other than you: an approver comments `/ops approve <request id>`.",
            op.approvals
        ));
    }
    let secrets = op.secret_params();
    if !secrets.is_empty() {
        intro.push_str(&format!(
            "\n\nThe secret parameter(s) {} cannot be given here: issues are public. Use the CLI or the API to set them.",
            secrets.join(", ")
        ));
    }
    let mut body = vec![
        Element {
            ty: "markdown",
            id: None,
            attributes: Attributes {
                value: Some(intro),
                ..Default::default()
            },
            validations: None,
        },
        Element {
            ty: "dropdown",
            id: Some("youops-operation".into()),
            attributes: Attributes {
                label: Some(OP_LABEL.into()),
                description: Some("The operation this issue requests (do not change).".into()),
                options: Some(vec![FormOption::Plain(op.name.clone())]),
                default: Some(0),
                ..Default::default()
            },
            validations: Some(Validations { required: true }),
        },
    ];
    body.extend(form_params(op).map(element_for));
    Form {
        name: op.name.clone(),
        description: if op.description.is_empty() {
            format!("Request the `{}` operation through YouOps", op.name)
        } else {
            op.description.clone()
        },
        title: format!("[youops] {}", op.name),
        labels: vec![FORM_LABEL.into(), format!("youops:op:{}", op.name)],
        body,
    }
}

/// The issue-form template of one op (YAML), or why it has none.
pub fn issue_form(op: &OpSpec) -> Result<String, String> {
    if let Some(why) = form_exclusion(op) {
        return Err(why);
    }
    let form = form_for(op);
    let yaml = serde_yaml::to_string(&form).map_err(|e| e.to_string())?;
    Ok(format!(
        "# Generated by `youops gen issue-forms` from the YouOps catalog; regenerate instead of editing.\n{yaml}"
    ))
}

/// One issue-form template per op the catalog exposes to IssueOps: `(file name,
/// YAML)`, where the file name (`<op>.yml`) is relative to the repository's
/// `.github/ISSUE_TEMPLATE/` folder. Ops that get no form (see
/// [`form_exclusion`]) are left out.
pub fn issue_forms(catalog: &Catalog) -> Vec<(String, String)> {
    catalog
        .iter()
        .filter_map(|op| issue_form(op).ok().map(|y| (format!("{}.yml", op.name), y)))
        .collect()
}

/// Normalize line ends (CRLF and lone CR become LF).
fn normalize(body: &str) -> String {
    body.replace("\r\n", "\n").replace('\r', "\n")
}

/// The heading text of a `### Heading` line, if it is one.
fn heading(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("###")?;
    if rest.starts_with('#') {
        return None;
    }
    let t = rest.trim();
    (!t.is_empty() && (rest.starts_with(' ') || rest.starts_with('\t'))).then_some(t)
}

/// The op an issue body (rendered from one of the forms) names, if any.
pub fn form_op(body: &str) -> Option<String> {
    let text = normalize(body);
    let mut lines = text.lines();
    lines.by_ref().find(|l| heading(l) == Some(OP_LABEL))?;
    let value: Vec<&str> = lines.take_while(|l| heading(l).is_none()).collect();
    let v = value.join("\n");
    let v = v.trim();
    (!v.is_empty() && v != NO_RESPONSE).then(|| v.to_string())
}

/// Parse the body GitHub rendered from the form of `op` into arguments, in
/// param order. An empty field (`_No response_`) gives no argument, so the
/// executor applies the default or reports the missing parameter; a `bool`
/// checkbox gives `true` or `false`; every other value is passed as written
/// (trimmed), for the executor to validate against the catalog.
///
/// Sections are found from the last field backwards: the section of field *k* is
/// the last `### <label k>` line before the section of field *k+1*. A value may
/// therefore contain `### ...` lines, even ones naming *other* fields; only a value
/// that contains its own field's heading line is ambiguous (the later heading wins).
///
/// Errors: the body is not one rendered from this form (no field heading at all),
/// or it names a different op.
pub fn parse_issue_form(body: &str, op: &OpSpec) -> Result<Vec<(String, String)>, Vec<String>> {
    let text = normalize(body);
    let lines: Vec<&str> = text.split('\n').collect();
    let params: Vec<&ParamSpec> = form_params(op).collect();
    let labels: Vec<&str> = std::iter::once(OP_LABEL)
        .chain(params.iter().map(|p| p.name.as_str()))
        .collect();
    // Section starts, found backwards.
    let mut starts: Vec<Option<usize>> = vec![None; labels.len()];
    let mut bound = lines.len();
    for (k, label) in labels.iter().enumerate().rev() {
        if let Some(pos) = (0..bound).rev().find(|&i| heading(lines[i]) == Some(label)) {
            starts[k] = Some(pos);
            bound = pos;
        }
    }
    if starts.iter().all(Option::is_none) {
        return Err(vec![format!(
            "the issue body is not from the `{}` form: none of its fields ({}) was found; open a new issue from the form",
            op.name,
            labels.join(", ")
        )]);
    }
    let mut found: Vec<(usize, usize)> = starts
        .iter()
        .enumerate()
        .filter_map(|(k, s)| s.map(|s| (k, s)))
        .collect();
    found.sort_by_key(|&(_, s)| s);
    let mut values: Vec<Option<String>> = vec![None; labels.len()];
    for (i, &(k, start)) in found.iter().enumerate() {
        let end = found.get(i + 1).map(|&(_, s)| s).unwrap_or(lines.len());
        let v = lines[start + 1..end].join("\n");
        let v = v.trim();
        if !v.is_empty() && v != NO_RESPONSE {
            values[k] = Some(v.to_string());
        }
    }
    let mut errors = Vec::new();
    if let Some(named) = &values[0] {
        if named != &op.name {
            errors.push(format!(
                "the issue names the operation `{named}`, not `{}`",
                op.name
            ));
        }
    }
    let mut args = Vec::new();
    for (p, v) in params.iter().zip(values.into_iter().skip(1)) {
        let Some(v) = v else { continue };
        let value = if p.ty == ParamType::Bool {
            checkbox_value(&v).unwrap_or(v)
        } else {
            v
        };
        args.push((p.name.clone(), value));
    }
    if errors.is_empty() {
        Ok(args)
    } else {
        Err(errors)
    }
}

/// `true`/`false` from checkbox lines (`- [X] yes`), or `None` when the value
/// has none.
fn checkbox_value(v: &str) -> Option<String> {
    let mut any = false;
    for line in v.lines() {
        let l = line.trim_start();
        let rest = l.strip_prefix("- [").or_else(|| l.strip_prefix("* ["));
        match rest.and_then(|r| r.chars().next()) {
            Some('x' | 'X') if rest.is_some_and(|r| r[1..].starts_with(']')) => {
                return Some("true".into())
            }
            Some(' ') if rest.is_some_and(|r| r[1..].starts_with(']')) => any = true,
            _ => {}
        }
    }
    any.then(|| "false".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op(text: &str) -> OpSpec {
        toml::from_str(text).unwrap()
    }

    fn deploy() -> OpSpec {
        op(r#"
name = "app.deploy"
description = "Deploy a version"
runner = { type = "builtin", name = "x" }
approvals = 1
[[params]]
name = "env"
type = "enum"
values = ["staging", "prod"]
default = "staging"
[[params]]
name = "version"
type = "string"
description = "Version to deploy"
[[params]]
name = "replicas"
type = "int"
min = 1
required = false
[[params]]
name = "notify"
type = "bool"
default = false
[[params]]
name = "verify"
type = "bool"
default = true
[[params]]
name = "owner"
type = "email"
required = false
[[params]]
name = "note"
type = "string"
required = false
[[params]]
name = "api_key"
type = "secret"
required = false
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
        assert!(issue_form(&secret).unwrap_err().contains("password"));
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
}
