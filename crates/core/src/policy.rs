//! Who may do what: principals with roles and frontend identities, grants of op
//! globs to roles (optionally limited to frontends and locations), deny by default.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::catalog::{Catalog, OpSpec};

/// A principal as written in config: `[principals.alice]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PrincipalSpec {
    /// Roles held.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Frontend identities: `slack = ["U0123"]`, `github = ["alice"]`,
    /// `cli = ["alice"]` (OS user), `git = ["alice@example.com"]`.
    #[serde(default)]
    pub identities: BTreeMap<String, Vec<String>>,
    /// API bearer tokens: `"sha256:<hex digest>"`, or the token itself (normally
    /// through `${ENV_VAR}`), which is hashed on load and never kept.
    #[serde(default)]
    pub tokens: Vec<String>,
}

/// A grant: `[[grants]] roles = [..] ops = [..]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GrantSpec {
    /// Roles the grant applies to.
    pub roles: Vec<String>,
    /// Op name globs (`*` any run of characters, `?` one).
    pub ops: Vec<String>,
    /// Only from these frontends (empty: any).
    #[serde(default)]
    pub frontends: Vec<String>,
    /// Only at these locations: Slack channel ids, `owner/repo`, ... (globs; empty: any).
    #[serde(default)]
    pub locations: Vec<String>,
}

/// Where a request comes from, for grant limits.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// Frontend name.
    pub frontend: &'a str,
    /// Location within it (may be empty).
    pub location: &'a str,
}

/// Why the policy said no: a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial(pub String);

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The compiled policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    principals: BTreeMap<String, PrincipalSpec>,
    grants: Vec<GrantSpec>,
    identities: HashMap<(String, String), String>,
    tokens: Vec<([u8; 32], String)>,
}

/// Hex SHA-256 of a token, as written in config (`sha256:<hex>`).
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Policy {
    /// Build the policy; returns every problem found.
    pub fn new(
        principals: BTreeMap<String, PrincipalSpec>,
        grants: Vec<GrantSpec>,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut identities = HashMap::new();
        let mut tokens = Vec::new();
        for (name, p) in &principals {
            for (frontend, ids) in &p.identities {
                for id in ids {
                    if let Some(other) =
                        identities.insert((frontend.clone(), id.clone()), name.clone())
                    {
                        errors.push(format!(
                            "principals.{name}: identity {frontend}:{id} also belongs to `{other}`"
                        ));
                    }
                }
            }
            for (i, t) in p.tokens.iter().enumerate() {
                let digest = match t.strip_prefix("sha256:") {
                    Some(hexd) => match hex::decode(hexd) {
                        Ok(d) if d.len() == 32 => {
                            let mut a = [0u8; 32];
                            a.copy_from_slice(&d);
                            a
                        }
                        _ => {
                            errors.push(format!(
                                "principals.{name}.tokens[{i}]: `sha256:` must be followed by 64 hex digits"
                            ));
                            continue;
                        }
                    },
                    None => {
                        if t.len() < 16 {
                            errors.push(format!(
                                "principals.{name}.tokens[{i}]: a token must be at least 16 characters"
                            ));
                            continue;
                        }
                        Sha256::digest(t.as_bytes()).into()
                    }
                };
                tokens.push((digest, name.clone()));
            }
        }
        for (i, g) in grants.iter().enumerate() {
            if g.roles.is_empty() {
                errors.push(format!("grants[{i}]: `roles` is empty"));
            }
            if g.ops.is_empty() {
                errors.push(format!("grants[{i}]: `ops` is empty"));
            }
        }
        if errors.is_empty() {
            Ok(Policy {
                principals,
                grants,
                identities,
                tokens,
            })
        } else {
            Err(errors)
        }
    }

    /// Warnings that do not stop the config from loading: grants naming roles nobody
    /// holds, grants whose globs match no op.
    pub fn lint(&self, catalog: &Catalog) -> Vec<String> {
        let mut out = Vec::new();
        for (i, g) in self.grants.iter().enumerate() {
            for pat in &g.ops {
                if !catalog.iter().any(|op| glob_match(pat, &op.name)) {
                    out.push(format!("grants[{i}]: `{pat}` matches no op"));
                }
            }
        }
        out
    }

    /// The principal an identity maps to.
    pub fn resolve(&self, frontend: &str, external_id: &str) -> Option<&str> {
        self.identities
            .get(&(frontend.to_string(), external_id.to_string()))
            .map(String::as_str)
    }

    /// The principal a bearer token belongs to. Compares digests in constant time
    /// and always checks every configured token.
    pub fn resolve_token(&self, token: &str) -> Option<&str> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (digest, name) in &self.tokens {
            if bool::from(digest.ct_eq(&presented)) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// A principal's spec.
    pub fn principal(&self, name: &str) -> Option<&PrincipalSpec> {
        self.principals.get(name)
    }

    /// All principals.
    pub fn principals(&self) -> &BTreeMap<String, PrincipalSpec> {
        &self.principals
    }

    /// Whether `principal` may run `op` from `place`; a denial says which grant is missing.
    pub fn authorize(&self, principal: &str, op: &OpSpec, place: Place<'_>) -> Result<(), Denial> {
        let Some(p) = self.principals.get(principal) else {
            return Err(Denial(format!("`{principal}` is not a known principal")));
        };
        if p.roles.iter().any(|r| op.roles.contains(r)) {
            return Ok(());
        }
        let mut near = Vec::new();
        for g in &self.grants {
            if !g.ops.iter().any(|pat| glob_match(pat, &op.name)) {
                continue;
            }
            let role_ok = g.roles.iter().any(|r| p.roles.contains(r));
            let frontend_ok =
                g.frontends.is_empty() || g.frontends.iter().any(|f| f == place.frontend);
            let location_ok =
                g.locations.is_empty() || g.locations.iter().any(|l| glob_match(l, place.location));
            if role_ok && frontend_ok && location_ok {
                return Ok(());
            }
            if role_ok {
                let mut why = Vec::new();
                if !frontend_ok {
                    why.push(format!("only from {}", g.frontends.join(", ")));
                }
                if !location_ok {
                    why.push(format!("only in {}", g.locations.join(", ")));
                }
                near.push(why.join(" and "));
            }
        }
        let roles = if p.roles.is_empty() {
            "no roles".to_string()
        } else {
            format!("roles {}", p.roles.join(", "))
        };
        let who_may = self.roles_for(op);
        let mut msg = format!(
            "`{principal}` ({roles}) may not run `{}` from {}{}",
            op.name,
            place.frontend,
            if place.location.is_empty() {
                String::new()
            } else {
                format!(" in {}", place.location)
            }
        );
        if !near.is_empty() {
            msg.push_str(&format!(": your grant allows it {}", near.join("; or ")));
        } else if who_may.is_empty() {
            msg.push_str(": no grant gives this op to any role");
        } else {
            msg.push_str(&format!(
                ": no grant gives it to your roles (it is granted to {})",
                who_may.join(", ")
            ));
        }
        Err(Denial(msg))
    }

    /// Roles that are granted `op` somewhere.
    pub fn roles_for(&self, op: &OpSpec) -> Vec<String> {
        let mut roles: Vec<String> = op.roles.clone();
        for g in &self.grants {
            if g.ops.iter().any(|pat| glob_match(pat, &op.name)) {
                roles.extend(g.roles.iter().cloned());
            }
        }
        roles.sort();
        roles.dedup();
        roles
    }

    /// Whether `principal` may approve requests for `op`: a member of one of the op's
    /// `approvers` roles, or, when none are listed, anyone the policy lets run it
    /// from somewhere.
    pub fn may_approve(&self, principal: &str, op: &OpSpec) -> bool {
        let Some(p) = self.principals.get(principal) else {
            return false;
        };
        if op.approvers.is_empty() {
            let roles = self.roles_for(op);
            p.roles.iter().any(|r| roles.contains(r))
        } else {
            p.roles.iter().any(|r| op.approvers.contains(r))
        }
    }

    /// The ops `principal` may run from `place`, in name order.
    pub fn visible_ops<'c>(
        &self,
        principal: &str,
        catalog: &'c Catalog,
        place: Place<'_>,
    ) -> Vec<&'c OpSpec> {
        catalog
            .iter()
            .filter(|op| self.authorize(principal, op, place).is_ok())
            .collect()
    }
}

/// Glob match: `*` matches any run of characters (dots included), `?` exactly one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &str, roles: &[&str]) -> OpSpec {
        let mut spec: OpSpec = toml::from_str(&format!(
            "name = \"{name}\"\nrunner = {{ type = \"builtin\", name = \"noop\" }}"
        ))
        .unwrap();
        spec.roles = roles.iter().map(|s| s.to_string()).collect();
        spec
    }

    fn policy() -> Policy {
        let principals: BTreeMap<String, PrincipalSpec> = toml::from_str(
            r#"
[alice]
roles = ["ops"]
identities = { slack = ["U1"], cli = ["alice"] }
tokens = ["alice-token-0123456789"]
[bob]
roles = ["dev"]
identities = { slack = ["U2"] }
[carol]
roles = ["lead"]
"#,
        )
        .unwrap();
        let grants: Vec<GrantSpec> = vec![
            GrantSpec {
                roles: vec!["ops".into()],
                ops: vec!["deploy".into(), "cache.*".into()],
                ..Default::default()
            },
            GrantSpec {
                roles: vec!["dev".into()],
                ops: vec!["cache.*".into()],
                frontends: vec!["slack".into()],
                locations: vec!["C-dev".into()],
            },
        ];
        Policy::new(principals, grants).unwrap()
    }

    #[test]
    fn globs() {
        let cases = [
            ("*", "anything", true),
            ("user.*", "user.create", true),
            ("user.*", "users.create", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*.flush", "cache.flush", true),
            ("deploy", "deploy.prod", false),
            ("C*", "", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob_match(p, t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn deny_by_default_and_explain() {
        let pol = policy();
        let slack = Place {
            frontend: "slack",
            location: "C-dev",
        };
        let api = Place {
            frontend: "api",
            location: "",
        };
        assert!(pol.authorize("alice", &op("deploy", &[]), api).is_ok());
        let d = pol.authorize("bob", &op("deploy", &[]), slack).unwrap_err();
        assert!(d.0.contains("granted to ops"), "{d}");
        assert!(pol.authorize("bob", &op("cache.flush", &[]), slack).is_ok());
        let d = pol
            .authorize("bob", &op("cache.flush", &[]), api)
            .unwrap_err();
        assert!(d.0.contains("only from slack"), "{d}");
        let d = pol
            .authorize("carol", &op("secret.op", &[]), api)
            .unwrap_err();
        assert!(d.0.contains("no grant gives this op"), "{d}");
        assert!(pol
            .authorize("carol", &op("secret.op", &["lead"]), api)
            .is_ok());
        assert!(pol.authorize("mallory", &op("deploy", &[]), api).is_err());
    }

    #[test]
    fn identities_and_tokens() {
        let pol = policy();
        assert_eq!(pol.resolve("slack", "U1"), Some("alice"));
        assert_eq!(pol.resolve("github", "U1"), None);
        assert_eq!(pol.resolve_token("alice-token-0123456789"), Some("alice"));
        assert_eq!(pol.resolve_token("alice-token-012345678"), None);
        let digest = token_digest("x-token-abcdefghijkl");
        let principals = BTreeMap::from([(
            "x".to_string(),
            PrincipalSpec {
                tokens: vec![format!("sha256:{digest}")],
                ..Default::default()
            },
        )]);
        let pol = Policy::new(principals, vec![]).unwrap();
        assert_eq!(pol.resolve_token("x-token-abcdefghijkl"), Some("x"));
    }

    #[test]
    fn duplicate_identity_is_an_error() {
        let principals: BTreeMap<String, PrincipalSpec> = toml::from_str(
            "[a]\nidentities = { slack = [\"U1\"] }\n[b]\nidentities = { slack = [\"U1\"] }",
        )
        .unwrap();
        let errs = Policy::new(principals, vec![]).unwrap_err();
        assert!(errs[0].contains("also belongs to"), "{errs:?}");
    }

    #[test]
    fn approvers() {
        let pol = policy();
        let mut deploy = op("deploy", &[]);
        assert!(pol.may_approve("alice", &deploy));
        assert!(!pol.may_approve("carol", &deploy));
        deploy.approvers = vec!["lead".into()];
        assert!(pol.may_approve("carol", &deploy));
        assert!(!pol.may_approve("alice", &deploy));
    }
}
