//! The registry with a toy factory: lines survive, every problem at once.

use std::sync::Arc;

use super::*;
use crate::frontend::{FrontendContext, FrontendError};

#[derive(Debug)]
struct Toy;

#[async_trait::async_trait]
impl Frontend for Toy {
    fn name(&self) -> &str {
        "toy"
    }

    async fn run(&self, _ctx: FrontendContext) -> Result<(), FrontendError> {
        Ok(())
    }
}

/// Needs `url` (a string starting with `http`) and at most 3 `retries`;
/// every `[[toy.hooks]]` needs a `name`.
struct ToyFactory;

impl FrontendFactory for ToyFactory {
    fn name(&self) -> &'static str {
        "toy"
    }

    fn build(&self, s: &FrontendSection<'_>) -> Result<Arc<dyn Frontend>, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        match s.table().get("url").and_then(|v| v.as_str()) {
            Some(u) if u.starts_with("http") => {}
            Some(u) => issues.push(s.issue("url", format!("`{u}` is not an http(s) URL"))),
            None => issues.push(s.issue("url", "is required")),
        }
        if s.table().get("retries").and_then(|v| v.as_integer()) > Some(3) {
            issues.push(s.issue("retries", "must be at most 3"));
        }
        let hooks = s.table().get("hooks").and_then(|v| v.as_array());
        for (i, h) in hooks.into_iter().flatten().enumerate() {
            if h.get("name").is_none() {
                issues.push(s.issue(&format!("hooks[{i}].name"), "is required"));
            }
        }
        if issues.is_empty() {
            Ok(Arc::new(Toy))
        } else {
            Err(issues)
        }
    }
}

fn registry() -> FrontendRegistry {
    let mut r = FrontendRegistry::new();
    r.register(ToyFactory);
    r
}

fn parse(text: &str) -> Config {
    Config::parse(text, ".".as_ref(), "t.toml", &|_| None).unwrap()
}

const BAD: &str = r#"[server]
listen = "127.0.0.1:1"

[frontends.toy]
url = "ftp://x"
retries = 9

[[frontends.toy.hooks]]
name = "a"

[[frontends.toy.hooks]]
when = "later"
"#;

#[test]
fn every_problem_at_once_on_its_line() {
    let issues = registry().check(&parse(BAD), &[]);
    let text: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
    assert_eq!(
        text,
        [
            "line 5: frontends.toy.url: `ftp://x` is not an http(s) URL",
            "line 6: frontends.toy.retries: must be at most 3",
            "line 11: frontends.toy.hooks[1].name: is required",
        ],
        "{text:#?}"
    );
    assert_eq!(registry().build(&parse(BAD)).unwrap_err(), issues);
}

#[test]
fn a_missing_key_is_placed_on_the_section() {
    let issues = registry().check(&parse("\n\n[frontends.toy]\nretries = 1\n"), &[]);
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].line, Some(3), "{issues:?}");
    assert_eq!(issues[0].path, "frontends.toy.url");
}

#[test]
fn a_good_section_builds() {
    let cfg = parse("[frontends.toy]\nurl = \"https://x\"\n");
    assert!(registry().check(&cfg, &[]).is_empty());
    assert_eq!(registry().build(&cfg).unwrap().names(), ["toy"]);
}

#[test]
fn sections_without_a_factory() {
    let cfg = parse(
        "[frontends.toy]\nurl = \"https://x\"\n[frontends.slack]\nbot_token = \"x\"\n[frontends.tpy]\n[frontends.mine]\n",
    );
    let issues = registry().check(&cfg, &["mine"]);
    let text: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
    assert_eq!(
        text,
        [
            "line 3: frontends.slack: this build has no slack frontend (not compiled in; enable the cargo feature `slack`)",
            "line 5: frontends.tpy: unknown frontend (this build has: toy)",
        ],
        "{text:#?}"
    );
    // Building leaves sections without a factory alone.
    assert_eq!(registry().build(&cfg).unwrap().names(), ["toy"]);
}

#[test]
fn a_section_built_in_code_has_no_lines() {
    let table: toml::Table = "retries = 5".parse().unwrap();
    let cfg = Config::default();
    let s = FrontendSection::new("toy", &table, &cfg);
    let issues = ToyFactory.check(&s);
    assert_eq!(issues.len(), 2);
    assert!(issues.iter().all(|i| i.line.is_none()));
}

#[test]
fn top_level_kinds_are_deprecated_with_a_line() {
    let cfg = parse("[server]\n\n[[kinds]]\nname = \"user\"\napply = \"user.apply\"\n");
    let w = cfg.warnings();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].line, Some(3), "{w:?}");
    assert!(w[0].message.contains("[[frontends.git.kinds]]"));
    assert_eq!(cfg.line_of("kinds[0] (user)"), Some(3));
    assert!(
        parse("[frontends.git]\n[[frontends.git.kinds]]\nname = \"u\"\n")
            .warnings()
            .is_empty()
    );
}

#[test]
fn lines_survive_implicit_tables_and_dotted_keys() {
    let cfg = parse("[server]\n\n[[frontends.toy.hooks]]\nname = \"a\"\nwhen.after = \"1s\"\n");
    assert_eq!(cfg.line_of("frontends.toy.hooks[0].name"), Some(4));
    assert_eq!(cfg.line_of("frontends.toy.hooks[0].when.after"), Some(5));
    assert_eq!(cfg.line_of("frontends.toy.hooks[0].nothing"), Some(3));
    assert_eq!(cfg.line_of("frontends.toy.url"), None);
}
