//! Frontend factories: each frontend crate parses its own `[frontends.NAME]`
//! section and builds its frontend from it, reporting every problem at once
//! as [`ConfigIssue`]s placed on the lines of the file, like core's own
//! config errors. A [`FrontendRegistry`] holds the factories a build has and
//! checks every `[frontends.*]` section of a config against them.
//!
//! ```
//! use std::sync::Arc;
//! use youops_core::config::{Config, ConfigIssue};
//! use youops_core::frontend::factory::{FrontendFactory, FrontendRegistry, FrontendSection};
//! use youops_core::frontend::Frontend;
//!
//! struct Echo;
//! impl FrontendFactory for Echo {
//!     fn name(&self) -> &'static str {
//!         "echo"
//!     }
//!     fn build(&self, s: &FrontendSection<'_>) -> Result<Arc<dyn Frontend>, Vec<ConfigIssue>> {
//!         Err(vec![s.issue("greeting", "is required")])
//!     }
//! }
//!
//! let text = "[frontends.echo]\nvolume = 3\n[frontends.slak]\n";
//! let cfg = Config::parse(text, ".".as_ref(), "y.toml", &|_| None).unwrap();
//! let mut reg = FrontendRegistry::new();
//! reg.register(Echo);
//! let issues = reg.check(&cfg, &[]);
//! assert_eq!(issues[0].to_string(), "line 1: frontends.echo.greeting: is required");
//! assert!(issues[1].message.starts_with("unknown frontend"));
//! ```

use std::fmt;
use std::sync::Arc;

use super::{Frontend, Frontends};
use crate::config::{Config, ConfigIssue};

/// The frontends YouOps ships, whether or not a build compiled them in: a
/// section of one of these that a registry has no factory for is "not
/// compiled in", not unknown.
pub const BUILTIN_FRONTENDS: [&str; 3] = ["git", "github", "slack"];

/// One `[frontends.NAME]` section as a factory sees it: the table, the whole
/// config (base directory, store, catalog) and where its keys are.
#[derive(Debug, Clone, Copy)]
pub struct FrontendSection<'a> {
    name: &'a str,
    table: &'a toml::Table,
    config: &'a Config,
}

impl<'a> FrontendSection<'a> {
    /// The section `[frontends.NAME]` of `config`, if it has one.
    pub fn of(config: &'a Config, name: &'a str) -> Option<FrontendSection<'a>> {
        let table = config.frontends.get(name)?;
        Some(FrontendSection {
            name,
            table,
            config,
        })
    }

    /// A section that is not (or not necessarily) in `config`, such as a
    /// table built in code: its issues carry no lines unless `config` has
    /// this section's lines.
    pub fn new(name: &'a str, table: &'a toml::Table, config: &'a Config) -> FrontendSection<'a> {
        FrontendSection {
            name,
            table,
            config,
        }
    }

    /// The frontend name, `NAME` of `[frontends.NAME]`.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The section's keys (with `${VAR}` already expanded).
    pub fn table(&self) -> &'a toml::Table {
        self.table
    }

    /// The whole config.
    pub fn config(&self) -> &'a Config {
        self.config
    }

    /// The dotted path of `key` (`repo`, `kinds[1].apply`; empty: the
    /// section): `frontends.NAME.key`.
    pub fn path(&self, key: &str) -> String {
        match key {
            "" => format!("frontends.{}", self.name),
            k if k.starts_with('[') => format!("frontends.{}{k}", self.name),
            k => format!("frontends.{}.{k}", self.name),
        }
    }

    /// The line of `key` (or of the nearest enclosing key, or of the
    /// section's header), if known.
    pub fn line(&self, key: &str) -> Option<usize> {
        self.config.line_of(&self.path(key))
    }

    /// A problem with `key` (empty: the whole section), on its line.
    pub fn issue(&self, key: &str, message: impl Into<String>) -> ConfigIssue {
        self.issue_at(key, key, message)
    }

    /// Read the whole section into `T`. A problem is reported on the key it
    /// is about (`frontends.slack.bot_token: invalid type: integer `1`,
    /// expected a string`, on that key's line); an unknown field on the
    /// line of that field.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigIssue> {
        let value = toml::Value::Table(self.table.clone());
        serde_path_to_error::deserialize(value).map_err(|e| {
            let key = match e.path().to_string() {
                p if p == "." => String::new(),
                p => p,
            };
            self.serde_issue(&key, e.inner())
        })
    }

    /// A `serde` error of reading `key` (empty: the whole section), on the
    /// line of the field it names (`unknown field `x``), else of `key`.
    pub fn serde_issue(&self, key: &str, e: &toml::de::Error) -> ConfigIssue {
        let message = e.message().trim();
        let field = ["unknown field `", "duplicate field `"]
            .iter()
            .find_map(|p| message.split_once(p))
            .and_then(|(_, rest)| rest.split('`').next());
        match field {
            Some(f) if key.is_empty() => self.issue_at(key, f, message),
            Some(f) => self.issue_at(key, &format!("{key}.{f}"), message),
            None => self.issue(key, message),
        }
    }

    /// A problem reported on the section (`path_key`) but placed on the line
    /// of `line_key`, e.g. a serde error about one unknown field.
    pub fn issue_at(
        &self,
        path_key: &str,
        line_key: &str,
        message: impl Into<String>,
    ) -> ConfigIssue {
        ConfigIssue {
            line: self.line(line_key),
            path: self.path(path_key),
            message: message.into(),
        }
    }
}

/// The problems found in one section, each on its key's line: a factory
/// collects every problem before it answers.
#[derive(Debug)]
pub struct SectionIssues<'s, 'a> {
    section: &'s FrontendSection<'a>,
    list: Vec<ConfigIssue>,
}

impl<'s, 'a> SectionIssues<'s, 'a> {
    /// No problems yet, in `section`.
    pub fn new(section: &'s FrontendSection<'a>) -> Self {
        SectionIssues {
            section,
            list: Vec::new(),
        }
    }

    /// A problem with `key` (empty: the whole section).
    pub fn push(&mut self, key: &str, message: impl Into<String>) {
        self.list.push(self.section.issue(key, message));
    }

    /// A problem with `key`, said as a sentence about it: `rest` follows
    /// the key's path (`frontends.github.token is empty`).
    pub fn say(&mut self, key: &str, rest: impl fmt::Display) {
        let message = format!("{} {rest}", self.section.path(key));
        self.push(key, message);
    }

    /// Whether none were found.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `Err` with every problem found so far (which are then handed over),
    /// or `Ok` when there is none: `issues.check()?` before building.
    pub fn check(&mut self) -> Result<(), Vec<ConfigIssue>> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(std::mem::take(&mut self.list))
        }
    }
}

/// Parses one frontend's section and builds the frontend. Both report every
/// problem at once.
pub trait FrontendFactory: Send + Sync {
    /// The section name it handles (`[frontends.NAME]`), also the frontend's.
    fn name(&self) -> &'static str;

    /// Every problem with the section, including ones only the whole config
    /// shows (an op the section names that is not in the catalog). By
    /// default, what [`build`](Self::build) reports.
    fn check(&self, section: &FrontendSection<'_>) -> Vec<ConfigIssue> {
        self.build(section).err().unwrap_or_default()
    }

    /// The frontend the section describes. Nothing is contacted yet.
    fn build(&self, section: &FrontendSection<'_>) -> Result<Arc<dyn Frontend>, Vec<ConfigIssue>>;
}

/// The frontend factories of a build.
#[derive(Clone, Default)]
pub struct FrontendRegistry {
    factories: Vec<Arc<dyn FrontendFactory>>,
}

impl fmt::Debug for FrontendRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontendRegistry")
            .field("factories", &self.names())
            .finish()
    }
}

impl FrontendRegistry {
    /// No factories.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a factory; one registered under the same name before is replaced.
    pub fn register(&mut self, factory: impl FrontendFactory + 'static) -> &mut Self {
        self.register_arc(Arc::new(factory))
    }

    /// Like [`register`](Self::register), for a shared factory.
    pub fn register_arc(&mut self, factory: Arc<dyn FrontendFactory>) -> &mut Self {
        self.factories.retain(|f| f.name() != factory.name());
        self.factories.push(factory);
        self
    }

    /// The factory for `[frontends.NAME]`.
    pub fn get(&self, name: &str) -> Option<&dyn FrontendFactory> {
        self.factories
            .iter()
            .find(|f| f.name() == name)
            .map(|f| f.as_ref())
    }

    /// The names of the registered factories, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.factories.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        names
    }

    /// Each `[frontends.*]` section of `cfg` that has a factory here, with
    /// it, in section-name order.
    pub fn sections<'a>(
        &'a self,
        cfg: &'a Config,
    ) -> impl Iterator<Item = (&'a dyn FrontendFactory, FrontendSection<'a>)> + 'a {
        cfg.frontends.iter().filter_map(move |(name, table)| {
            let f = self.get(name)?;
            Some((f, FrontendSection::new(name, table, cfg)))
        })
    }

    /// Every problem with the `[frontends.*]` sections of `cfg`, except
    /// those named in `extra` (an embedder's own): each factory's checks,
    /// and a section no factory handles.
    pub fn check(&self, cfg: &Config, extra: &[&str]) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        for (name, table) in &cfg.frontends {
            if extra.contains(&name.as_str()) {
                continue;
            }
            let section = FrontendSection::new(name, table, cfg);
            match self.get(name) {
                Some(f) => out.extend(f.check(&section)),
                None => out.push(self.missing(&section)),
            }
        }
        out.sort_by_key(|i| i.line.unwrap_or(usize::MAX));
        out
    }

    /// The issue of a section no factory handles.
    fn missing(&self, section: &FrontendSection<'_>) -> ConfigIssue {
        let name = section.name();
        if BUILTIN_FRONTENDS.contains(&name) {
            return section.issue(
                "",
                format!("this build has no {name} frontend (not compiled in; enable the cargo feature `{name}`)"),
            );
        }
        let names = self.names();
        let has = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        };
        section.issue("", format!("unknown frontend (this build has: {has})"))
    }

    /// Build the frontend of every section of `cfg` that has a factory here
    /// (other sections are left alone: [`check`](Self::check) reports them);
    /// every problem at once.
    pub fn build(&self, cfg: &Config) -> Result<Frontends, Vec<ConfigIssue>> {
        let mut set = Frontends::new();
        let mut issues = Vec::new();
        for (factory, section) in self.sections(cfg) {
            match factory.build(&section) {
                Ok(f) => set.push(f),
                Err(e) => issues.extend(e),
            }
        }
        if issues.is_empty() {
            Ok(set)
        } else {
            Err(issues)
        }
    }
}

#[cfg(test)]
mod tests;
