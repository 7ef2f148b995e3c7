//! Where the keys of `[server]`, of the `[frontends.*]` sections and of
//! `[[kinds]]` are: a second, spanned pass over the file that keeps one line
//! per key path, so that the daemon and the frontends, which check their own
//! sections after loading, can place their problems on lines too.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// A TOML value reduced to its shape.
enum Node {
    Table(Vec<(String, Located)>),
    Array(Vec<Located>),
    Leaf,
}

/// A [`Node`] with where its value starts, when `toml` knows it. A key's own
/// span is not available below the top level, but a value is on its key's
/// line, and a table on its `[header]`'s. Unlike [`toml::Spanned`], this also
/// accepts a value without a span (an implicit table, such as `frontends` of
/// `[frontends.git]`), rather than failing the whole parse.
struct Located {
    start: Option<usize>,
    node: Node,
}

// `toml` hands a value's span to a type that asks for this struct by name with
// these fields (the protocol of `serde_spanned`, which `toml::Spanned` uses).
const SPANNED: &str = "$__serde_spanned_private_Spanned";
const START: &str = "$__serde_spanned_private_start";
const END: &str = "$__serde_spanned_private_end";
const VALUE: &str = "$__serde_spanned_private_value";

/// Reads a value into a [`Node`]; with `spanned`, a map may be a span.
struct NodeVisitor {
    spanned: bool,
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Located;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Located, E> {
        Ok(Located::leaf())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Located, E> {
        Ok(Located::leaf())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Located, E> {
        Ok(Located::leaf())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Located, E> {
        Ok(Located::leaf())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Located, E> {
        Ok(Located::leaf())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Located, A::Error> {
        let mut out = Vec::new();
        while let Some(x) = seq.next_element::<Located>()? {
            out.push(x);
        }
        Ok(Located {
            start: None,
            node: Node::Array(out),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Located, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            if self.spanned && out.is_empty() && k == START {
                let start = map.next_value::<usize>()?;
                let _end = map.next_key::<String>()?;
                let _ = map.next_value::<usize>()?;
                let _value = map.next_key::<String>()?;
                let inner = map.next_value_seed(NodeSeed)?;
                return Ok(Located {
                    start: Some(start),
                    node: inner.node,
                });
            }
            out.push((k, map.next_value::<Located>()?));
        }
        Ok(Located {
            start: None,
            node: Node::Table(out),
        })
    }
}

impl Located {
    fn leaf() -> Located {
        Located {
            start: None,
            node: Node::Leaf,
        }
    }
}

impl<'de> Deserialize<'de> for Located {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Located, D::Error> {
        d.deserialize_struct(SPANNED, &[START, END, VALUE], NodeVisitor { spanned: true })
    }
}

/// The value inside a span: any value, never a span itself.
struct NodeSeed;

impl<'de> de::DeserializeSeed<'de> for NodeSeed {
    type Value = Located;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Located, D::Error> {
        d.deserialize_any(NodeVisitor { spanned: false })
    }
}

/// The parts of the file whose lines are kept (everything else is ignored).
#[derive(Deserialize)]
struct LinesDoc {
    #[serde(default)]
    server: Option<Located>,
    #[serde(default)]
    frontends: Option<Located>,
    #[serde(default)]
    kinds: Option<Located>,
}

/// 1-based line of each key path (`server.listen`, `frontends.git.repo`,
/// `frontends.git.kinds[1].apply`, `kinds[0]`) of `[server]`, of the
/// frontends' sections and of `[[kinds]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyLines(BTreeMap<String, usize>);

impl KeyLines {
    /// The lines of `text` (none if it cannot be read that way: the lines
    /// are a help, never a reason to refuse a file).
    pub(crate) fn of(text: &str) -> KeyLines {
        let mut out = KeyLines::default();
        let Ok(doc) = toml::from_str::<LinesDoc>(text) else {
            return out;
        };
        let starts: Vec<usize> = text
            .bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'\n')
            .map(|(i, _)| i)
            .collect();
        let line = |offset: usize| starts.partition_point(|nl| *nl < offset) + 1;
        if let Some(s) = &doc.server {
            if let Some(start) = s.start {
                out.0.insert("server".into(), line(start));
            }
            out.walk("server", s, &line);
        }
        if let Some(f) = &doc.frontends {
            out.walk("frontends", f, &line);
        }
        if let Some(k) = &doc.kinds {
            if let Some(s) = k.start {
                out.0.insert("kinds".into(), line(s));
            }
            out.walk("kinds", k, &line);
        }
        out
    }

    fn walk(&mut self, path: &str, node: &Located, line: &dyn Fn(usize) -> usize) {
        let mut visit = |p: String, v: &Located| {
            if let Some(s) = v.start {
                self.0.insert(p.clone(), line(s));
            }
            self.walk(&p, v, line);
        };
        match &node.node {
            Node::Table(entries) => {
                for (k, v) in entries {
                    visit(format!("{path}.{k}"), v);
                }
            }
            Node::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    visit(format!("{path}[{i}]"), v);
                }
            }
            Node::Leaf => {}
        }
    }

    /// The line of `path`, or of the nearest enclosing key that has one. A
    /// label after the path (`kinds[0] (user)`) is ignored.
    pub(crate) fn line(&self, path: &str) -> Option<usize> {
        let mut p = path.split(" (").next().unwrap_or(path);
        loop {
            if let Some(l) = self.0.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}
