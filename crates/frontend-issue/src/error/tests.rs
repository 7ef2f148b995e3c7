use super::*;

/// One of every variant.
fn all() -> Vec<GithubError> {
    vec![
        ApiError("GET /x: 404 Not Found: Not Found".into()).into(),
        SignatureError::Mismatch.into(),
        GithubError::Payload("the body is not JSON: x".into()),
        GithubError::Config(vec!["a".into(), "b".into()]),
        GithubError::NoForm("no form".into()),
        GithubError::Form(vec!["a".into(), "b".into()]),
    ]
}

#[test]
fn every_variant_has_a_distinct_stable_code() {
    let codes: Vec<&str> = all().iter().map(GithubError::code).collect();
    assert_eq!(
        codes,
        [
            "github_api_error",
            "signature_invalid",
            "bad_payload",
            "config_invalid",
            "no_issue_form",
            "form_unreadable",
        ]
    );
    youops_core::frontend::conformance::assert_stable_codes(&codes);
}

#[test]
fn wrapped_errors_keep_their_texts() {
    let sigs = [
        SignatureError::Missing { sha1_only: true },
        SignatureError::Missing { sha1_only: false },
        SignatureError::Malformed,
        SignatureError::Mismatch,
    ];
    for s in sigs {
        let text = s.to_string();
        assert_eq!(GithubError::from(s).to_string(), text);
    }
    assert_eq!(
        GithubError::from(SignatureError::Mismatch).to_string(),
        "X-Hub-Signature-256 does not match the body (wrong webhook secret?)"
    );
    let api = ApiError("bad api_base_url: x".into());
    assert_eq!(
        GithubError::from(api).to_string(),
        "GitHub API: bad api_base_url: x"
    );
    assert_eq!(
        GithubError::Form(vec!["a".into(), "b".into()]).to_string(),
        "unreadable form: a; b"
    );
    assert_eq!(
        GithubError::Config(vec!["a".into(), "b".into()]).to_string(),
        "a; b"
    );
}

#[test]
fn config_issues_convert_with_their_texts() {
    let section: toml::Table = "token = 1".parse().unwrap();
    let issues =
        crate::GithubConfig::from_section(&youops_core::frontend::factory::FrontendSection::new(
            "github",
            &section,
            &youops_core::config::Config::default(),
        ))
        .unwrap_err();
    let texts: Vec<String> = issues.iter().map(ToString::to_string).collect();
    match GithubError::from(issues) {
        GithubError::Config(got) => assert_eq!(got, texts),
        other => panic!("{other:?}"),
    }
}
