//! Reading an issue body rendered from one of the forms back into the op and
//! its arguments.

use youops_core::catalog::{OpSpec, ParamSpec, ParamType};

use super::{form_params, NO_RESPONSE, OP_LABEL};

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
