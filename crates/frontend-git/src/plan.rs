//! The plan: desired state vs actual, one entry per resource, printed like a diff.

use std::collections::BTreeMap;
use std::fmt;

use youops_core::{RequestId, State};

use crate::config::Kinds;
use crate::desired::{resource_id, DesiredState, Resource};

/// What a plan entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Declared, not there: apply.
    Create,
    /// Declared and there, but different: apply.
    Update,
    /// There, no longer declared, prune on: delete.
    Delete,
    /// Declared and there, the same: nothing.
    Unchanged,
    /// There, not declared, but prune is off (or the kind has no delete op): left alone.
    Orphan,
}

impl Action {
    /// `create`, `update`, `delete`, `unchanged`, `orphan`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Unchanged => "unchanged",
            Action::Orphan => "orphan",
        }
    }

    /// The diff sign: `+ ~ - = !`.
    pub fn sign(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '~',
            Action::Delete => '-',
            Action::Unchanged => '=',
            Action::Orphan => '!',
        }
    }

    /// Whether it makes a request.
    pub fn is_change(self) -> bool {
        matches!(self, Action::Create | Action::Update | Action::Delete)
    }
}

/// One field that differs: `(field, actual, desired)`; `None` = absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// Field name.
    pub field: String,
    /// Actual value.
    pub from: Option<String>,
    /// Desired value.
    pub to: Option<String>,
}

/// One resource in a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlanEntry {
    /// Kind.
    pub kind: String,
    /// Key.
    pub key: String,
    /// What happens.
    pub action: Action,
    /// `file:line` of the declaration, when declared.
    pub location: Option<String>,
    /// Field differences (create, update).
    pub changes: Vec<FieldChange>,
    /// Fields passed to the op (declared fields; the last known ones for deletes
    /// and orphans). Empty for unchanged entries: nothing is passed, and copying
    /// every field of every unchanged resource was most of the cost of a plan.
    pub fields: BTreeMap<String, String>,
    /// The request made for it, once made.
    pub request: Option<RequestId>,
    /// Its state when the pass ended.
    pub state: Option<State>,
    /// A remark (`retry 2 in 40s`, `prune is off`, an error).
    pub remark: Option<String>,
}

impl PlanEntry {
    /// `kind/key`.
    pub fn id(&self) -> String {
        resource_id(&self.kind, &self.key)
    }

    /// The one-line diff form, without requests.
    pub fn line(&self) -> String {
        let mut s = format!("{} {}", self.action.sign(), self.id());
        if let Some(l) = &self.location {
            s.push_str(&format!("  ({l})"));
        }
        s
    }
}

/// The result of planning (and, unless a dry run, applying) one commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Plan {
    /// Branch.
    pub branch: String,
    /// Commit whose desired state was planned (`None`: the branch has no commits).
    pub commit: Option<String>,
    /// Nothing was planned because the head is the one already reconciled and
    /// nothing waits for a retry (the fast path of interval passes).
    pub unchanged_head: bool,
    /// Planned only; nothing was submitted.
    pub dry_run: bool,
    /// Entries, sorted by kind and key.
    pub entries: Vec<PlanEntry>,
    /// Kinds whose actual state could not be read (their resources are not planned).
    pub kind_errors: Vec<String>,
}

impl Plan {
    /// Entries that make a request.
    pub fn changes(&self) -> impl Iterator<Item = &PlanEntry> {
        self.entries.iter().filter(|e| e.action.is_change())
    }

    /// The entry of `kind/key`.
    pub fn entry(&self, id: &str) -> Option<&PlanEntry> {
        self.entries.iter().find(|e| e.id() == id)
    }

    /// Counts by action.
    pub fn count(&self, action: Action) -> usize {
        self.entries.iter().filter(|e| e.action == action).count()
    }
}

fn quote(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "(absent)".into(),
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(commit) = &self.commit else {
            return writeln!(f, "branch {} has no commits: nothing to plan", self.branch);
        };
        writeln!(
            f,
            "plan for {} at {}{}",
            self.branch,
            &commit[..commit.len().min(12)],
            if self.dry_run { " (dry run)" } else { "" }
        )?;
        if self.unchanged_head {
            return writeln!(f, "head already reconciled: nothing to do");
        }
        for e in &self.entries {
            write!(f, "{}", e.line())?;
            if let (Some(id), Some(st)) = (e.request, e.state) {
                write!(f, "  -> {id} {st}")?;
            }
            if let Some(r) = &e.remark {
                write!(f, "  [{r}]")?;
            }
            writeln!(f)?;
            for c in &e.changes {
                match e.action {
                    Action::Create => writeln!(f, "    + {} = {}", c.field, quote(&c.to))?,
                    _ => writeln!(
                        f,
                        "    ~ {}: {} -> {}",
                        c.field,
                        quote(&c.from),
                        quote(&c.to)
                    )?,
                }
            }
        }
        for k in &self.kind_errors {
            writeln!(f, "! {k}")?;
        }
        writeln!(
            f,
            "{} to create, {} to update, {} to delete, {} unchanged{}",
            self.count(Action::Create),
            self.count(Action::Update),
            self.count(Action::Delete),
            self.count(Action::Unchanged),
            match self.count(Action::Orphan) {
                0 => String::new(),
                n => format!(", {n} not in git (left alone)"),
            }
        )
    }
}

/// Actual resources of one kind: key → fields.
pub type ActualKind = BTreeMap<String, BTreeMap<String, String>>;

/// How the actual state of a kind was learned.
#[derive(Debug, Clone)]
pub struct Actual {
    /// The resources.
    pub resources: ActualKind,
    /// From YouOps' own record of what it applied: every field counts, so a field
    /// removed from the declaration is an update. (An observer's extra fields —
    /// ids, timestamps — are ignored.)
    pub exact: bool,
}

/// A resource's fields.
pub(crate) type Fields = BTreeMap<String, String>;

/// The actual state as the planner reads it. A kind is read either by key
/// (an observer's output, looked up per declared resource) or by id (what
/// YouOps recorded, walked in id order beside the declared resources, which
/// are in id order too: a merge, not ten thousand lookups).
pub(crate) trait ActualState {
    /// Whether `kind` was read (kinds not read are not planned).
    fn has(&self, kind: &str) -> bool;
    /// Whether every field of `kind`'s resources counts (see [`Actual::exact`]).
    fn exact(&self, kind: &str) -> bool;
    /// The resources of `kind` by key, when `kind` is read that way.
    fn by_key(&self, kind: &str) -> Option<&ActualKind>;
    /// Every kind read by key, with its resources.
    fn keyed(&self) -> Box<dyn Iterator<Item = (&str, &ActualKind)> + '_>;
    /// The resources of the kinds read by id: `(kind/key, kind, key, fields)`
    /// in id order.
    fn by_id(&self) -> Box<dyn Iterator<Item = (&str, &str, &str, &Fields)> + '_>;
}

impl ActualState for BTreeMap<String, Actual> {
    fn has(&self, kind: &str) -> bool {
        self.contains_key(kind)
    }

    fn exact(&self, kind: &str) -> bool {
        self.get(kind).is_some_and(|a| a.exact)
    }

    fn by_key(&self, kind: &str) -> Option<&ActualKind> {
        self.get(kind).map(|a| &a.resources)
    }

    fn keyed(&self) -> Box<dyn Iterator<Item = (&str, &ActualKind)> + '_> {
        Box::new(self.iter().map(|(k, a)| (k.as_str(), &a.resources)))
    }

    fn by_id(&self) -> Box<dyn Iterator<Item = (&str, &str, &str, &Fields)> + '_> {
        Box::new(std::iter::empty())
    }
}

/// Plan `desired` against `actual` (kinds missing from `actual` are not planned).
pub fn diff(
    desired: &DesiredState,
    actual: &BTreeMap<String, Actual>,
    kinds: &Kinds,
    prune: bool,
) -> Vec<PlanEntry> {
    plan_with(desired, actual, kinds, prune)
}

/// The entry of a resource that is there but not declared.
fn undeclared(kinds: &Kinds, prune: bool, kind: &str, key: &str, fields: &Fields) -> PlanEntry {
    let can_delete = kinds.get(kind).is_some_and(|s| s.delete.is_some());
    let (action, remark) = match (prune, can_delete) {
        (true, true) => (Action::Delete, None),
        (false, _) => (Action::Orphan, Some("not in git; prune is off".to_string())),
        (true, false) => (
            Action::Orphan,
            Some(format!("not in git; kind `{kind}` has no delete op")),
        ),
    };
    PlanEntry {
        kind: kind.to_string(),
        key: key.to_string(),
        action,
        location: None,
        changes: Vec::new(),
        fields: fields.clone(),
        request: None,
        state: None,
        remark,
    }
}

/// The entry of a declared resource, given its actual fields (`None`: not there).
fn declared(r: &Resource, have: Option<&Fields>, exact: bool) -> PlanEntry {
    let (action, changes) = match have {
        // Most resources, most of the time: the same fields.
        Some(have) if exact && *have == r.fields => (Action::Unchanged, Vec::new()),
        None => (
            Action::Create,
            r.fields
                .iter()
                .map(|(k, v)| FieldChange {
                    field: k.clone(),
                    from: None,
                    to: Some(v.clone()),
                })
                .collect(),
        ),
        Some(have) => {
            let mut changes: Vec<FieldChange> = r
                .fields
                .iter()
                .filter(|(k, v)| have.get(*k) != Some(*v))
                .map(|(k, v)| FieldChange {
                    field: k.clone(),
                    from: have.get(k).cloned(),
                    to: Some(v.clone()),
                })
                .collect();
            if exact {
                changes.extend(have.iter().filter(|(k, _)| !r.fields.contains_key(*k)).map(
                    |(k, v)| FieldChange {
                        field: k.clone(),
                        from: Some(v.clone()),
                        to: None,
                    },
                ));
            }
            if changes.is_empty() {
                (Action::Unchanged, changes)
            } else {
                (Action::Update, changes)
            }
        }
    };
    PlanEntry {
        kind: r.kind.clone(),
        key: r.key.clone(),
        action,
        location: Some(r.location()),
        changes,
        fields: if action == Action::Unchanged {
            BTreeMap::new()
        } else {
            r.fields.clone()
        },
        request: None,
        state: None,
        remark: None,
    }
}

/// [`diff`] over any [`ActualState`]: resources are borrowed, not copied; only
/// the plan entries own their data.
pub(crate) fn plan_with(
    desired: &DesiredState,
    actual: &(impl ActualState + ?Sized),
    kinds: &Kinds,
    prune: bool,
) -> Vec<PlanEntry> {
    let mut out = Vec::with_capacity(desired.resources.len());
    let mut by_id = actual.by_id().peekable();
    // Declared resources are grouped by kind (they are in id order): look the
    // kind up once per group.
    let mut group: Option<(&str, bool, bool, Option<&ActualKind>)> = None;
    for (id, r) in &desired.resources {
        // Recorded resources before this one are not declared.
        while let Some((_, kind, key, fields)) = by_id.next_if(|(rid, ..)| *rid < id.as_str()) {
            out.push(undeclared(kinds, prune, kind, key, fields));
        }
        let (has, exact, keyed) = match group {
            Some((k, has, exact, keyed)) if k == r.kind => (has, exact, keyed),
            _ => {
                let g = (
                    r.kind.as_str(),
                    actual.has(&r.kind),
                    actual.exact(&r.kind),
                    actual.by_key(&r.kind),
                );
                group = Some(g);
                (g.1, g.2, g.3)
            }
        };
        // The recorded resource with this id, if any, is this one (kind names
        // have no `/`, so `kind/key` splits one way only).
        let recorded = by_id
            .next_if(|(rid, ..)| *rid == id.as_str())
            .map(|(.., fields)| fields);
        if !has {
            continue;
        }
        let have = match keyed {
            Some(resources) => resources.get(&r.key),
            None => recorded,
        };
        out.push(declared(r, have, exact));
    }
    for (_, kind, key, fields) in by_id {
        out.push(undeclared(kinds, prune, kind, key, fields));
    }
    // Observed resources that are not declared.
    let mut id = String::new();
    for (kind, resources) in actual.keyed() {
        for (key, fields) in resources {
            id.clear();
            id.push_str(kind);
            id.push('/');
            id.push_str(key);
            if !desired.resources.contains_key(&id) {
                out.push(undeclared(kinds, prune, kind, key, fields));
            }
        }
    }
    out.sort_by(|a, b| (&a.kind, &a.key).cmp(&(&b.kind, &b.key)));
    out
}

/// Parse an observer's JSON: an array of objects carrying the key field, or an
/// object mapping keys to objects. Values become text (nested values as JSON).
pub fn parse_observed(json: &str, key_field: &str) -> Result<ActualKind, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("observer printed no valid JSON: {e}"))?;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let fields_of = |o: &serde_json::Map<String, serde_json::Value>| -> BTreeMap<String, String> {
        o.iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), text(v)))
            .collect()
    };
    let mut out = BTreeMap::new();
    match v {
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let obj = item
                    .as_object()
                    .ok_or_else(|| format!("observer item {i} is not an object"))?;
                let key = obj
                    .get(key_field)
                    .filter(|k| !k.is_null())
                    .map(text)
                    .ok_or_else(|| format!("observer item {i} has no key field `{key_field}`"))?;
                out.insert(key, fields_of(obj));
            }
        }
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                let obj = item
                    .as_object()
                    .ok_or_else(|| format!("observer entry `{key}` is not an object"))?;
                let mut f = fields_of(obj);
                f.entry(key_field.to_string())
                    .or_insert_with(|| key.clone());
                out.insert(key, f);
            }
        }
        _ => return Err("observer must print a JSON array or object".into()),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::parse_files;

    fn kinds() -> Kinds {
        let t: toml::Table =
            toml::from_str("name = \"user\"\napply = \"user.apply\"\ndelete = \"user.delete\"")
                .unwrap();
        Kinds::parse(&[t], std::path::Path::new("/")).unwrap()
    }

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn table_of_plans() {
        let desired = parse_files(
            &[(
                "u.toml".into(),
                "[[resource]]\nkind=\"user\"\nname=\"a\"\nemail=\"a@x\"\n[[resource]]\nkind=\"user\"\nname=\"b\"\nemail=\"b@new\"\n[[resource]]\nkind=\"user\"\nname=\"c\"\n".into(),
            )],
            &kinds(),
        )
        .unwrap();
        let mut have = ActualKind::new();
        have.insert("b".into(), fields(&[("name", "b"), ("email", "b@old")]));
        have.insert("c".into(), fields(&[("name", "c"), ("id", "17")]));
        have.insert("d".into(), fields(&[("name", "d")]));
        for (exact, prune, expect) in [
            (false, true, "+a ~b =c -d"),
            (false, false, "+a ~b =c !d"),
            (true, true, "+a ~b ~c -d"),
        ] {
            let actual = BTreeMap::from([(
                "user".to_string(),
                Actual {
                    resources: have.clone(),
                    exact,
                },
            )]);
            let plan = diff(&desired, &actual, &kinds(), prune);
            let got: Vec<String> = plan
                .iter()
                .map(|e| format!("{}{}", e.action.sign(), e.key))
                .collect();
            assert_eq!(got.join(" "), expect);
            for e in &plan {
                // Unchanged entries carry no fields; changes carry what the op gets.
                assert_eq!(e.fields.is_empty(), e.action == Action::Unchanged, "{e:?}");
            }
        }
    }

    #[test]
    fn display_is_a_diff() {
        let desired = parse_files(
            &[(
                "u.toml".into(),
                "[[resource]]\nkind=\"user\"\nname=\"a\"\n".into(),
            )],
            &kinds(),
        )
        .unwrap();
        let actual = BTreeMap::from([(
            "user".to_string(),
            Actual {
                resources: BTreeMap::from([("z".to_string(), fields(&[("name", "z")]))]),
                exact: true,
            },
        )]);
        let plan = Plan {
            branch: "main".into(),
            commit: Some("0123456789abcdef0123".into()),
            entries: diff(&desired, &actual, &kinds(), true),
            dry_run: true,
            ..Default::default()
        };
        let text = plan.to_string();
        assert_eq!(
            text,
            "plan for main at 0123456789ab (dry run)\n+ user/a  (u.toml:1)\n    + name = \"a\"\n- user/z\n1 to create, 0 to update, 1 to delete, 0 unchanged\n"
        );
    }

    #[test]
    fn observed_json_shapes() {
        let a = parse_observed(
            r#"[{"name":"a","n":1,"x":null},{"name":"b","tags":["t"]}]"#,
            "name",
        )
        .unwrap();
        assert_eq!(a["a"], fields(&[("name", "a"), ("n", "1")]));
        assert_eq!(a["b"]["tags"], "[\"t\"]");
        let b = parse_observed(r#"{"a":{"email":"e"}}"#, "name").unwrap();
        assert_eq!(b["a"], fields(&[("name", "a"), ("email", "e")]));
        assert!(parse_observed("[1]", "name").is_err());
        assert!(parse_observed(r#"[{"x":1}]"#, "name").is_err());
        assert!(parse_observed("nope", "name").is_err());
        assert!(parse_observed("3", "name").is_err());
    }
}
