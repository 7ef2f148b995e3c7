//! The section's and the kinds' parsing and checks.

use super::*;

fn table(s: &str) -> toml::Table {
    toml::from_str(s).unwrap()
}

#[test]
fn defaults() {
    let c = GitConfig::parse(&table("repo = \"repo\""), Path::new("/etc/youops")).unwrap();
    assert_eq!(c.source, Source::Local(PathBuf::from("/etc/youops/repo")));
    assert_eq!(c.branch, "main");
    assert_eq!(c.interval, DEFAULT_INTERVAL);
    assert!(!c.prune && !c.self_heal && !c.push_notes && !c.require_signed);
    assert_eq!(c.state_dir, PathBuf::from("/etc/youops/youops-data/git"));
    assert_eq!(
        c.checkout_dir,
        PathBuf::from("/etc/youops/youops-data/git/checkout")
    );
    assert_eq!(c.tracking_ref(), "refs/heads/main");
}

#[test]
fn urls_are_remotes() {
    for u in [
        "file:///srv/r.git",
        "git://127.0.0.1/r",
        "https://example.com/r.git",
        "ssh://git@h/r",
        "git@github.com:o/r.git",
    ] {
        let c = GitConfig::parse(&table(&format!("repo = {u:?}")), Path::new("/")).unwrap();
        assert_eq!(c.source, Source::Remote(u.to_string()));
        assert_eq!(c.tracking_ref(), "refs/remotes/origin/main");
    }
}

#[test]
fn every_problem_at_once() {
    let e = GitConfig::parse(
        &table("repo = \"ftp://x/y\"\nbranch = \"a b\"\npath = \"../up\"\nrequire_signed = true\nwebhook_secret = \"short\"\ninterval = \"1ms\""),
        Path::new("/"),
    )
    .unwrap_err();
    assert_eq!(e.len(), 6, "{e:?}");
    let e = GitConfig::parse(&table("repo = \"r\"\nbogus = 1"), Path::new("/")).unwrap_err();
    assert!(e[0].contains("unknown field `bogus`"), "{e:?}");
}

#[test]
fn credentials_in_urls_are_refused_and_stripped() {
    assert_eq!(
        strip_credentials("https://u:p@h.example/r"),
        "https://h.example/r"
    );
    let e =
        GitConfig::parse(&table("repo = \"https://u:p@h.example/r\""), Path::new("/")).unwrap_err();
    assert!(e[0].contains("credentials"));
}

#[test]
fn kinds_parse_and_check() {
    let k = Kinds::parse(
        &[table("name = \"user\"\napply = \"user.apply\"\ndelete = \"user.delete\"\nobserve = [\"./list\", \"users\"]\nself_heal = true")],
        Path::new("/cfg"),
    )
    .unwrap();
    let u = k.get("user").unwrap();
    assert_eq!(u.key, "name");
    assert_eq!(u.observe.as_ref().unwrap()[0], "/cfg/./list");
    let e = Kinds::parse(
        &[
            table("name = \"a b\"\napply = \"x\"\n"),
            table("name = \"u\"\napply = \"u.a\"\nwat = 1"),
            table("name = \"v\"\napply = \"v.a\"\nkey = \"kind\""),
            table("name = \"v\"\napply = \"v.a\""),
        ],
        Path::new("/"),
    )
    .unwrap_err();
    assert_eq!(e.len(), 4, "{e:?}");
}

#[test]
fn problems_in_a_config_file_carry_their_lines() {
    let text = "[[ops]]\nname = \"u.a\"\nrunner = { type = \"builtin\", name = \"echo\" }\n\n[frontends.git]\nrepo = \"r\"\ninterval = \"1ms\"\n\n[[frontends.git.kinds]]\nname = \"u\"\napply = \"u.a\"\n\n[[frontends.git.kinds]]\nname = \"v v\"\napply = \"v.a\"\n";
    let cfg = Config::parse(text, "/".as_ref(), "y.toml", &|_| None).unwrap();
    let s = FrontendSection::of(&cfg, "git").unwrap();
    let e = GitConfig::from_section(&s).unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "line 7: frontends.git.interval: must be at least 100ms"
    );
    let e = Kinds::from_section(&s).unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "line 13: frontends.git.kinds[1] (v v): name must be letters, digits, `_`, `-` or `.`"
    );
    let text = text.replace("v v", "v");
    let cfg = Config::parse(&text, "/".as_ref(), "y.toml", &|_| None).unwrap();
    let s = FrontendSection::of(&cfg, "git").unwrap();
    let e = Kinds::from_section(&s).unwrap().check_catalog_at(&s);
    assert_eq!(
        e[0].to_string(),
        "line 9: frontends.git.kinds (u): key field `name` is not a param of `u.a`"
    );
    assert_eq!(
        e[1].to_string(),
        "line 13: frontends.git.kinds (v): apply op `v.a` is not in the catalog"
    );
}
