//! Writing the issue-form templates (YAML), one per op the catalog exposes.

use serde::Serialize;
use youops_core::catalog::{Catalog, OpSpec, ParamSpec, ParamType};

use super::{CHECKBOX_TEXT, FORM_LABEL, OP_LABEL};
use crate::GithubError;

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

/// The issue-form template of one op (YAML), or why it has none
/// ([`GithubError::NoForm`]).
pub fn issue_form(op: &OpSpec) -> Result<String, GithubError> {
    if let Some(why) = form_exclusion(op) {
        return Err(GithubError::NoForm(why));
    }
    let form = form_for(op);
    let yaml = serde_yaml::to_string(&form).map_err(|e| GithubError::NoForm(e.to_string()))?;
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
