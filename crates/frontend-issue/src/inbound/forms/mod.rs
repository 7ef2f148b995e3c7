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
//!
//! `template` writes the forms and `parse` reads what GitHub renders from
//! them; both follow the layout fixed by the constants here.

mod parse;
mod template;
#[cfg(test)]
mod tests;

pub use parse::{form_op, parse_issue_form};
pub use template::{form_exclusion, form_params, issue_form, issue_forms};

/// The label of the field that names the op in every form.
pub const OP_LABEL: &str = "YouOps operation";
/// What GitHub writes for a field left empty.
pub const NO_RESPONSE: &str = "_No response_";
/// The label every form puts on its issues (create it in the repository).
pub const FORM_LABEL: &str = "youops";
/// The text of the single checkbox of a `bool` param.
pub const CHECKBOX_TEXT: &str = "yes";
