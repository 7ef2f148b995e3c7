//! Desired-state files: TOML under the configured subdirectory of the repository.
//!
//! ```toml
//! [[resource]]
//! kind = "user"            # a kind declared in `[[kinds]]`
//! name = "alice"           # the kind's key field
//! email = "alice@example.com"
//! admin = true             # strings, integers, floats, booleans and dates
//! ```
//!
//! Every problem is reported with the file and the 1-based line it is on; all
//! files are checked and every problem is returned at once, and a commit with any
//! problem is applied not at all.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{KindSpec, Kinds};

/// Largest desired-state file read (bigger files are an error, not a hang).
pub const MAX_FILE_BYTES: usize = 8 << 20;

/// One problem in the desired state, placed at a file and line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DesiredError {
    /// Path of the file, relative to the repository root.
    pub file: String,
    /// 1-based line (0 when the problem is about the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for DesiredError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

/// One declared resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Its kind.
    pub kind: String,
    /// Value of the kind's key field.
    pub key: String,
    /// Every field but `kind` (the key field included), as the text passed to ops.
    pub fields: BTreeMap<String, String>,
    /// File it is declared in.
    pub file: String,
    /// Line of its `[[resource]]` header.
    pub line: usize,
}

impl Resource {
    /// `kind/key`, the resource's identity.
    pub fn id(&self) -> String {
        resource_id(&self.kind, &self.key)
    }

    /// `file:line`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// `kind/key`.
pub fn resource_id(kind: &str, key: &str) -> String {
    format!("{kind}/{key}")
}

/// The whole desired state of one commit, by `kind/key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// Resources by id.
    pub resources: BTreeMap<String, Resource>,
}

type RawTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    resource: Vec<Spanned<RawTable>>,
}

/// Byte offsets of the newlines of a text: the 1-based line of any byte offset
/// by binary search (counting newlines from the start for every span made
/// parsing quadratic in the file size).
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Lines {
        Lines(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }

    /// The line of byte `offset`: one more than the newlines before it.
    fn of(&self, offset: usize) -> usize {
        self.0.partition_point(|nl| *nl < offset) + 1
    }
}

/// The text a scalar value is passed to an op as, or `None` for arrays and tables.
pub fn scalar_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// Parse one desired-state file. Never panics, whatever the input.
pub fn parse_file(
    file: &str,
    text: &str,
    kinds: &Kinds,
) -> Result<Vec<Resource>, Vec<DesiredError>> {
    let err = |line: usize, message: String| DesiredError {
        file: file.to_string(),
        line,
        message,
    };
    if text.len() > MAX_FILE_BYTES {
        return Err(vec![err(
            0,
            format!("file is larger than {MAX_FILE_BYTES} bytes"),
        )]);
    }
    let lines = Lines::new(text);
    let raw = read_raw(text, &lines).map_err(|(line, msg)| vec![err(line, msg)])?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for table in raw.resource {
        let mut put = |line: usize, message: String| errors.push(err(line, message));
        if let Some((kind, key, fields, line)) = parse_resource(table, &lines, kinds, &mut put) {
            out.push(Resource {
                kind,
                key,
                fields,
                file: file.to_string(),
                line,
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The file as TOML, or the line and text of why it is not a desired-state file.
fn read_raw(text: &str, lines: &Lines) -> Result<RawFile, (usize, String)> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| lines.of(s.start)).unwrap_or(0);
        let msg = e.message().trim().to_string();
        let msg = if msg.contains("unknown field") {
            format!("{msg} (desired-state files hold only [[resource]] tables)")
        } else {
            format!("not valid TOML: {msg}")
        };
        (line, msg)
    })
}

/// One `[[resource]]` table: its kind, key, fields and header line, or `None`
/// with its problems handed to `err` (line, message), in the order found.
fn parse_resource(
    table: Spanned<RawTable>,
    lines: &Lines,
    kinds: &Kinds,
    err: &mut impl FnMut(usize, String),
) -> Option<(String, String, BTreeMap<String, String>, usize)> {
    let span = table.span();
    let table = table.into_inner();
    let line = header_line(span.start, &table, lines);
    let (kind, spec) = match resource_kind(&table, line, lines, kinds) {
        Ok(k) => k,
        Err((line, message)) => {
            err(line, message);
            return None;
        }
    };
    let (fields, bad) = resource_fields(&table, lines, err);
    let key = match fields.get(&spec.key) {
        Some(k) if !k.trim().is_empty() => k.clone(),
        Some(_) => {
            err(
                line,
                format!("key field `{}` of kind `{kind}` is empty", spec.key),
            );
            return None;
        }
        None => {
            err(
                line,
                format!("resource of kind `{kind}` has no key field `{}`", spec.key),
            );
            return None;
        }
    };
    if bad {
        return None;
    }
    Some((kind, key, fields, line))
}

/// The line of a resource's `[[resource]]` header.
fn header_line(start: usize, table: &RawTable, lines: &Lines) -> usize {
    // The table's own span may start at its first key; the header is the
    // line of the earliest thing we know about, which is accurate enough
    // and never past the resource.
    let first_key = table.keys().map(|k| k.span().start).min();
    let mut line = lines.of(start);
    if let Some(k) = first_key {
        // `[[resource]]` sits on the line before the first key when the span
        // covers only the body.
        let kl = lines.of(k);
        if kl < line {
            line = kl;
        }
    }
    line
}

/// A resource's `kind` and its declaration, or the line and text of why not.
fn resource_kind<'k>(
    table: &RawTable,
    line: usize,
    lines: &Lines,
    kinds: &'k Kinds,
) -> Result<(String, &'k KindSpec), (usize, String)> {
    let kind_entry = table.iter().find(|(k, _)| k.get_ref() == "kind");
    let Some((_, kind_v)) = kind_entry else {
        return Err((line, "resource has no `kind`".into()));
    };
    let kind_line = lines.of(kind_v.span().start);
    let Some(kind) = kind_v.get_ref().as_str().map(str::to_string) else {
        return Err((kind_line, "`kind` must be a string".into()));
    };
    let Some(spec) = kinds.get(&kind) else {
        let known = kinds.names().join(", ");
        let hint = youops_core::grammar::suggest(&kind, kinds.names())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err((
            kind_line,
            format!(
                "unknown kind `{kind}`{hint}; known kinds: {}",
                if known.is_empty() { "none" } else { &known }
            ),
        ));
    };
    Ok((kind, spec))
}

/// Every field but `kind` as text, and whether any was not a scalar (each such
/// field is handed to `err`).
fn resource_fields(
    table: &RawTable,
    lines: &Lines,
    err: &mut impl FnMut(usize, String),
) -> (BTreeMap<String, String>, bool) {
    let mut fields = BTreeMap::new();
    let mut bad = false;
    for (k, v) in table {
        if k.get_ref() == "kind" {
            continue;
        }
        match scalar_text(v.get_ref()) {
            Some(t) => {
                fields.insert(k.get_ref().clone(), t);
            }
            None => {
                bad = true;
                err(
                    lines.of(k.span().start),
                    format!(
                        "field `{}` must be a string, number, boolean or date (not an array or table)",
                        k.get_ref()
                    ),
                );
            }
        }
    }
    (fields, bad)
}

/// Merge the resources of every file into one desired state; a key declared twice
/// is an error at the second place, naming the first.
pub fn combine<I>(files: I) -> Result<DesiredState, Vec<DesiredError>>
where
    I: IntoIterator<Item = Result<Vec<Resource>, Vec<DesiredError>>>,
{
    let mut state = DesiredState::default();
    let mut errors = Vec::new();
    for f in files {
        match f {
            Ok(resources) => {
                for r in resources {
                    let id = r.id();
                    if let Some(first) = state.resources.get(&id) {
                        errors.push(DesiredError {
                            file: r.file.clone(),
                            line: r.line,
                            message: format!(
                                "duplicate resource `{id}`: already declared at {}",
                                first.location()
                            ),
                        });
                    } else {
                        state.resources.insert(id, r);
                    }
                }
            }
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(state)
    } else {
        errors.sort();
        Err(errors)
    }
}

/// Update `state`, the combination of a set of files, to the combination of the
/// set without the `removed` files and with the `added` ones (which parsed
/// without errors): the resources of removed files go, those of added files
/// come. `false` when an added resource's id is already taken: that is a
/// duplicate, and [`combine`] over the whole set must name it (`state` is then
/// half-updated and must be dropped).
pub(crate) fn recombine<'a>(
    state: &mut DesiredState,
    removed: impl IntoIterator<Item = &'a [Resource]>,
    added: impl IntoIterator<Item = &'a [Resource]>,
) -> bool {
    for rs in removed {
        for r in rs {
            let id = r.id();
            if state
                .resources
                .get(&id)
                .is_some_and(|have| have.file == r.file && have.line == r.line)
            {
                state.resources.remove(&id);
            }
        }
    }
    for rs in added {
        for r in rs {
            match state.resources.entry(r.id()) {
                std::collections::btree_map::Entry::Occupied(_) => return false,
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(r.clone());
                }
            }
        }
    }
    true
}

/// Parse a set of `(path, text)` files into one desired state.
pub fn parse_files(
    files: &[(String, String)],
    kinds: &Kinds,
) -> Result<DesiredState, Vec<DesiredError>> {
    combine(files.iter().map(|(p, t)| parse_file(p, t, kinds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kinds() -> Kinds {
        let t: toml::Table = toml::from_str(
            r#"
name = "user"
key = "name"
apply = "user.apply"
"#,
        )
        .unwrap();
        let g: toml::Table = toml::from_str(
            r#"
name = "group"
key = "id"
apply = "group.apply"
"#,
        )
        .unwrap();
        Kinds::parse(&[t, g], std::path::Path::new("/")).unwrap()
    }

    #[test]
    fn parses_resources_with_lines() {
        let text = "# users\n\n[[resource]]\nkind = \"user\"\nname = \"alice\"\nemail = \"a@x\"\nage = 3\n\n[[resource]]\nkind = \"group\"\nid = 7\n";
        let r = parse_file("users.toml", text, &kinds()).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].id(), "user/alice");
        assert_eq!(r[0].fields["age"], "3");
        assert_eq!(r[0].fields["name"], "alice");
        assert!(!r[0].fields.contains_key("kind"));
        assert_eq!(r[0].line, 3, "{r:?}");
        assert_eq!(r[1].id(), "group/7");
        assert_eq!(r[1].line, 9, "{r:?}");
    }

    #[test]
    fn errors_carry_file_and_line() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "[[resource]]\nkind = \"user\"\nname = \n",
                3,
                "not valid TOML",
            ),
            (
                "[[resource]]\nkind = \"robot\"\nname = \"r\"\n",
                2,
                "unknown kind `robot`",
            ),
            (
                "[[resource]]\nkind = \"user\"\nemail = \"x\"\n",
                1,
                "no key field `name`",
            ),
            ("\n[[resource]]\nname = \"x\"\n", 2, "has no `kind`"),
            (
                "[[resource]]\nkind = \"user\"\nname = \"a\"\ntags = [1]\n",
                4,
                "must be a string",
            ),
            ("[users]\nname = \"a\"\n", 1, "unknown field"),
            (
                "[[resource]]\nkind = 3\nname = \"a\"\n",
                2,
                "must be a string",
            ),
        ];
        for (text, line, needle) in cases {
            let e = parse_file("d/f.toml", text, &kinds()).unwrap_err();
            assert_eq!(e[0].file, "d/f.toml");
            assert_eq!(e[0].line, *line, "{text:?}: {e:?}");
            assert!(e[0].message.contains(needle), "{text:?}: {e:?}");
            assert!(e[0].to_string().starts_with(&format!("d/f.toml:{line}: ")));
        }
    }

    #[test]
    fn unknown_kind_suggests() {
        let e = parse_file(
            "f.toml",
            "[[resource]]\nkind = \"usr\"\nname = \"a\"\n",
            &kinds(),
        )
        .unwrap_err();
        assert!(e[0].message.contains("did you mean `user`"), "{e:?}");
    }

    #[test]
    fn duplicates_across_files_name_both_places() {
        let files = vec![
            (
                "a.toml".to_string(),
                "[[resource]]\nkind = \"user\"\nname = \"alice\"\n".to_string(),
            ),
            (
                "b.toml".to_string(),
                "\n\n[[resource]]\nkind = \"user\"\nname = \"alice\"\n".to_string(),
            ),
        ];
        let e = parse_files(&files, &kinds()).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            "b.toml:3: duplicate resource `user/alice`: already declared at a.toml:1"
        );
    }

    #[test]
    fn every_error_of_every_file_is_reported() {
        let files = vec![
            ("a.toml".to_string(), "[[resource]]\nkind = \"x\"\nname = \"a\"\n[[resource]]\nkind = \"y\"\nname = \"b\"\n".to_string()),
            ("b.toml".to_string(), "not toml".to_string()),
        ];
        let e = parse_files(&files, &kinds()).unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn lines_match_counting_newlines() {
        let text = "a\n\nbc\nd";
        let lines = Lines::new(text);
        for offset in 0..=text.len() + 3 {
            let naive = text.as_bytes()[..offset.min(text.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            assert_eq!(lines.of(offset), naive, "offset {offset}");
        }
    }

    /// File `i` at version `v`: two users, whose names collide across files now and then.
    fn versioned(i: usize, v: usize) -> (String, Vec<Resource>) {
        let text = format!(
            "[[resource]]\nkind = \"user\"\nname = \"u{}\"\nv = \"{v}\"\n\n[[resource]]\nkind = \"user\"\nname = \"u{}\"\n",
            (i * 3 + v) % 7,
            (i * 5 + v * 2 + 1) % 7,
        );
        let path = format!("f{i}.toml");
        let rs = parse_file(&path, &text, &kinds()).unwrap();
        (path, rs)
    }

    proptest! {
        /// Swapping the resources of the files that changed into the last good
        /// state gives exactly what combining every file gives, and fails
        /// exactly when that has a duplicate.
        #[test]
        fn recombine_matches_combine(steps in proptest::collection::vec(
            proptest::collection::btree_map(0usize..5, 0usize..3, 0..5), 1..8)) {
            type Files = BTreeMap<String, (usize, usize)>;
            let mut last: Option<(Files, DesiredState)> = None;
            for step in steps {
                let files: Files = step
                    .iter()
                    .map(|(i, v)| (format!("f{i}.toml"), (*i, *v)))
                    .collect();
                let full = combine(files.values().map(|(i, v)| Ok(versioned(*i, *v).1)));
                if let Some((old, mut state)) = last.take() {
                    let removed: Vec<Vec<Resource>> = old
                        .iter()
                        .filter(|(p, iv)| files.get(*p) != Some(*iv))
                        .map(|(_, (i, v))| versioned(*i, *v).1)
                        .collect();
                    let added: Vec<Vec<Resource>> = files
                        .iter()
                        .filter(|(p, iv)| old.get(*p) != Some(*iv))
                        .map(|(_, (i, v))| versioned(*i, *v).1)
                        .collect();
                    let ok = recombine(
                        &mut state,
                        removed.iter().map(Vec::as_slice),
                        added.iter().map(Vec::as_slice),
                    );
                    match &full {
                        Ok(want) => {
                            prop_assert!(ok);
                            prop_assert_eq!(&state, want);
                        }
                        Err(_) => prop_assert!(!ok),
                    }
                }
                if let Ok(state) = full {
                    last = Some((files, state));
                }
            }
        }

        #[test]
        fn never_panics_on_any_text(text in "\\PC*") {
            let _ = parse_file("f.toml", &text, &kinds());
        }

        #[test]
        fn never_panics_on_tomlish_text(text in "(\\[\\[resource\\]\\]\n|kind = \"(user|group|x)\"\n|name = \"[a-z]{0,3}\"\n|id = [0-9]{1,3}\n|[a-z]{1,4} = (\"[^\"\n]{0,5}\"|[0-9]{1,4}|true|\\[\\]|\\{\\})\n|\\[[a-z]{1,4}\\]\n|\n){0,12}") {
            match parse_file("f.toml", &text, &kinds()) {
                Ok(rs) => for r in rs {
                    prop_assert!(r.line >= 1);
                    prop_assert!(!r.key.is_empty());
                },
                Err(es) => for e in es {
                    prop_assert!(e.line <= text.lines().count() + 1, "{e} in {text:?}");
                },
            }
        }
    }
}
