//! Config checks that depend on the frontends a build has: run with
//! `--no-default-features` (or `--features git` beside it) for the "not
//! compiled in" cases.

fn check(text: &str) -> Result<Vec<String>, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("youops.toml");
    std::fs::write(&path, text).unwrap();
    match youops::check::load_checked(&path, &[], &["echo"]) {
        Ok(cfg) => Ok(youops::check::warnings(&path, &cfg)),
        Err(problems) => Err(problems),
    }
}

#[cfg(not(feature = "slack"))]
#[test]
fn a_slack_section_in_a_build_without_slack_is_not_compiled_in() {
    let problems = check("[server]\n\n[frontends.slack]\nbot_token = \"x\"\n").unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].ends_with(
            ":line 3: frontends.slack: this build has no slack frontend (not compiled in; enable the cargo feature `slack`)"
        ),
        "{problems:?}"
    );
}

#[cfg(not(feature = "git"))]
#[test]
fn a_git_section_in_a_build_without_git_is_not_compiled_in() {
    let problems = check("[server]\n\n[frontends.git]\nrepo = \"x\"\n").unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].ends_with(
            ":line 3: frontends.git: this build has no git frontend (not compiled in; enable the cargo feature `git`)"
        ),
        "{problems:?}"
    );
}

#[test]
fn an_unknown_section_is_unknown() {
    let problems = check("[frontends.slak]\n").unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains(":line 1: frontends.slak: unknown frontend (this build has: "),
        "{problems:?}"
    );
}

#[cfg(feature = "git")]
#[test]
fn git_problems_carry_their_lines_and_kinds_move_under_the_section() {
    let text = "[frontends.git]\nrepo = \"\"\nbranch = \"a b\"\n\n[[frontends.git.kinds]]\nname = \"a b\"\napply = \"x\"\n";
    let problems = check(text).unwrap_err();
    let all = problems.join("\n");
    for needle in [
        ":line 2: frontends.git.repo: must not be empty",
        ":line 3: frontends.git.branch: `a b` is not a valid branch name",
        ":line 5: frontends.git.kinds[0] (a b): name must be letters",
    ] {
        assert!(all.contains(needle), "no {needle:?} in:\n{all}");
    }
}

#[cfg(feature = "git")]
#[test]
fn top_level_kinds_still_work_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let ops = "[[ops]]\nname = \"user.apply\"\nrunner = { type = \"builtin\", name = \"echo\" }\n[[ops.params]]\nname = \"name\"\ntype = \"string\"\n";
    let section = format!("[frontends.git]\nrepo = {:?}\n", repo.display().to_string());
    let kinds = "[[kinds]]\nname = \"user\"\napply = \"user.apply\"\n";
    let old = check(&format!("{ops}{section}{kinds}"));
    let warnings = old.unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("[[frontends.git.kinds]]"),
        "{warnings:?}"
    );
    let new = format!(
        "{ops}{section}{}",
        kinds.replace("[[kinds]]", "[[frontends.git.kinds]]")
    );
    assert_eq!(check(&new), Ok(vec![]));
    let both = format!(
        "{ops}{section}{}{kinds}",
        kinds.replace("[[kinds]]", "[[frontends.git.kinds]]")
    );
    assert!(check(&both).unwrap_err()[0].contains("declared both"));
}

#[cfg(not(feature = "git"))]
#[tokio::test]
async fn a_build_without_git_answers_reconcile_plans_as_not_compiled_in() {
    let d = crate::support::Daemon::start(&crate::support::config("", "")).await;
    let (status, v) = d
        .api
        .post(
            "/api/v1/reconcile/plan",
            Some(crate::support::ALICE),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status.as_u16(), 501, "{v}");
    assert_eq!(v["error"]["code"], "not_compiled_in", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("this build has no git frontend"),
        "{v}"
    );
    d.stop().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("youops.toml");
    std::fs::write(&path, crate::support::config("", "")).unwrap();
    let c = path.to_str().unwrap();
    let local = crate::support::youops(&["--config", c, "reconcile", "--once", "--dry-run"], &[]);
    assert_eq!(
        local.status.code(),
        Some(69),
        "{}",
        crate::support::describe(&local)
    );
    assert!(
        String::from_utf8_lossy(&local.stderr).contains("not compiled in"),
        "{}",
        crate::support::describe(&local)
    );
}
