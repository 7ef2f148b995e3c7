use super::*;
use proptest::prelude::*;

fn run(op: &str, args: &[(&str, &str)], dry_run: bool) -> Command {
    Command::Run {
        op: op.to_string(),
        args: args
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        dry_run,
    }
}

fn deny(id: &str, reason: Option<&str>) -> Command {
    Command::Deny {
        id: id.to_string(),
        reason: reason.map(str::to_string),
    }
}

fn help(op: Option<&str>) -> Command {
    Command::Help {
        op: op.map(str::to_string),
    }
}

#[test]
fn valid_inputs() {
    let cases: Vec<(&str, Command)> = vec![
        ("deploy", run("deploy", &[], false)),
        ("  deploy  ", run("deploy", &[], false)),
        ("deploy env=prod", run("deploy", &[("env", "prod")], false)),
        (
            "deploy env=prod --dry-run",
            run("deploy", &[("env", "prod")], true),
        ),
        (
            "deploy --dry-run env=prod --dry-run",
            run("deploy", &[("env", "prod")], true),
        ),
        (
            "deploy env=prod —dry-run",
            run("deploy", &[("env", "prod")], true),
        ),
        (
            "deploy env=prod –dry-run",
            run("deploy", &[("env", "prod")], true),
        ),
        (
            "deploy msg=\"hello world\"",
            run("deploy", &[("msg", "hello world")], false),
        ),
        (
            "deploy msg=“hello world” env=prod",
            run("deploy", &[("msg", "hello world"), ("env", "prod")], false),
        ),
        (
            r#"deploy msg=“no \escapes "here"”"#,
            run("deploy", &[("msg", r#"no \escapes "here""#)], false),
        ),
        (
            r#"deploy msg="say \"hi\" \\ a\nb\tc \q""#,
            run("deploy", &[("msg", "say \"hi\" \\ a\nb\tc \\q")], false),
        ),
        ("deploy x=", run("deploy", &[("x", "")], false)),
        (
            "deploy x= y=1",
            run("deploy", &[("x", ""), ("y", "1")], false),
        ),
        ("deploy x=\"\"", run("deploy", &[("x", "")], false)),
        ("deploy a=b=c", run("deploy", &[("a", "b=c")], false)),
        (
            "deploy note=\"line1\nline2\"",
            run("deploy", &[("note", "line1\nline2")], false),
        ),
        (
            "user.create name=alice\tteam=ops\r\nrole=admin",
            run(
                "user.create",
                &[("name", "alice"), ("team", "ops"), ("role", "admin")],
                false,
            ),
        ),
        (
            "deploy\u{a0}env=prod",
            run("deploy", &[("env", "prod")], false),
        ),
        ("deploy msg=it's", run("deploy", &[("msg", "it's")], false)),
        (
            r"deploy path=C:\tmp",
            run("deploy", &[("path", r"C:\tmp")], false),
        ),
        ("deploy env=pröd", run("deploy", &[("env", "pröd")], false)),
        (
            "db-backup_2.run _X-1=v",
            run("db-backup_2.run", &[("_X-1", "v")], false),
        ),
        ("help", help(None)),
        ("help deploy", help(Some("deploy"))),
        ("  help\n user.create  ", help(Some("user.create"))),
        ("help deny", help(Some("deny"))),
        (
            "approve 01HXYZ",
            Command::Approve {
                id: "01HXYZ".into(),
            },
        ),
        (
            "cancel abc-1_2",
            Command::Cancel {
                id: "abc-1_2".into(),
            },
        ),
        ("status X", Command::Status { id: "X".into() }),
        ("retry r1", Command::Retry { id: "r1".into() }),
        ("deny r1", deny("r1", None)),
        ("deny r1   ", deny("r1", None)),
        (
            "deny r1 too risky today",
            deny("r1", Some("too risky today")),
        ),
        ("deny r1 \"not now\"", deny("r1", Some("not now"))),
        ("deny r1 “not now”", deny("r1", Some("not now"))),
        ("deny r1 \"line\\nnext\"", deny("r1", Some("line\nnext"))),
        ("deny r1 \" padded \"", deny("r1", Some(" padded "))),
        (
            "deny r1  \"a\" and \"b\"  ",
            deny("r1", Some("\"a\" and \"b\"")),
        ),
        ("deny r1 \"unclosed", deny("r1", Some("\"unclosed"))),
        ("deny r1 \"\"", deny("r1", None)),
        ("deny r1\nwhy: x=1", deny("r1", Some("why: x=1"))),
    ];
    for (input, expected) in cases {
        assert_eq!(parse(input), Ok(expected.clone()), "input: {input:?}");
        assert_eq!(
            parse(&expected.render()),
            Ok(expected.clone()),
            "render: {:?}",
            expected.render()
        );
    }
}

#[test]
fn invalid_inputs() {
    use ParseErrorKind as K;
    let long_op = "a".repeat(65);
    let overlong = format!("deploy x={}", "a".repeat(MAX_COMMAND_LEN));
    let cases: Vec<(&str, K, usize)> = vec![
        ("", K::Empty, 1),
        ("  \n\t ", K::Empty, 1),
        (
            overlong.as_str(),
            K::TooLong {
                len: overlong.len(),
            },
            1,
        ),
        ("\0", K::ControlChar { ch: '\0' }, 1),
        ("deploy x=\0", K::ControlChar { ch: '\0' }, 10),
        ("héllo x=\u{1}", K::ControlChar { ch: '\u{1}' }, 9),
        ("deploy x=\"a\u{1b}b\"", K::ControlChar { ch: '\u{1b}' }, 12),
        ("deploy msg=\"hello", K::UnbalancedQuote, 12),
        ("deploy msg=“hello", K::UnbalancedQuote, 12),
        ("deploy msg=“hello\"", K::UnbalancedQuote, 12),
        ("deploy a=1 msg=\"ends in \\\"", K::UnbalancedQuote, 16),
        ("deploy msg=\"hi\"there", K::TextAfterQuote, 16),
        ("deploy msg=“hi”x", K::TextAfterQuote, 16),
        ("deploy x=\"a\"\"b\"", K::TextAfterQuote, 13),
        ("deploy msg=héllo\"x", K::QuoteInValue { quote: '"' }, 17),
        ("deploy msg=”hi”", K::QuoteInValue { quote: '”' }, 12),
        (
            "deploy foo",
            K::ExpectedParam {
                found: "foo".into(),
            },
            8,
        ),
        (
            "deploy x= \"a b\"",
            K::ExpectedParam {
                found: "\"a".into(),
            },
            11,
        ),
        ("deploy =2", K::MissingParamName, 8),
        (
            "deploy 1x=2",
            K::BadParamName {
                name: "1x".into(),
                reason: "names start with a letter or _ and contain letters, digits, _ or -",
            },
            8,
        ),
        (
            "deploy env=a env=b",
            K::DuplicateParam { name: "env".into() },
            14,
        ),
        (
            "deploy --force",
            K::UnknownFlag {
                flag: "--force".into(),
            },
            8,
        ),
        (
            "deploy x=1 —force",
            K::UnknownFlag {
                flag: "—force".into(),
            },
            12,
        ),
        (
            "deploy --dry-run=yes",
            K::UnknownFlag {
                flag: "--dry-run=yes".into(),
            },
            8,
        ),
        ("approve", K::MissingId { command: "approve" }, 8),
        ("status   ", K::MissingId { command: "status" }, 7),
        ("deny", K::MissingId { command: "deny" }, 5),
        ("approve a b", K::TooManyIds { command: "approve" }, 11),
        ("retry a\n\"b c\"", K::TooManyIds { command: "retry" }, 9),
        ("approve a!", K::BadId { id: "a!".into() }, 9),
        ("deny r1! no", K::BadId { id: "r1!".into() }, 6),
        ("help a b", K::TooManyHelpArgs, 8),
    ];
    for (input, kind, column) in cases {
        assert_eq!(
            parse(input),
            Err(ParseError { column, kind }),
            "input: {input:?}"
        );
    }

    // Op-name rules: the variant and the column (reasons checked loosely).
    let bad_ops: Vec<(String, usize)> = vec![
        ("Deploy!".into(), 1),
        ("dép x=1".into(), 1),
        ("1deploy".into(), 1),
        ("a..b".into(), 1),
        ("deploy.".into(), 1),
        ("deploy-".into(), 1),
        ("_deploy".into(), 1),
        ("Help".into(), 1),
        (format!("  {long_op}"), 3),
        ("help Bad".into(), 6),
        ("help a..b".into(), 6),
    ];
    for (input, column) in bad_ops {
        let err = parse(&input).unwrap_err();
        assert_eq!(err.column, column, "input: {input:?}");
        assert!(
            matches!(err.kind, K::BadOpName { .. }),
            "input: {input:?}: {err}"
        );
    }
}

#[test]
fn length_limit_is_inclusive() {
    let exact = format!("deploy x={}", "a".repeat(MAX_COMMAND_LEN - 9));
    assert_eq!(exact.len(), MAX_COMMAND_LEN);
    assert!(parse(&exact).is_ok());
}

#[test]
fn error_messages() {
    let msg = |s: &str| parse(s).unwrap_err().to_string();
    assert_eq!(msg(""), "at column 1: empty command");
    assert_eq!(
        msg("deploy x=\"a"),
        "at column 10: unbalanced quote: the value opened here is never closed"
    );
    assert_eq!(
        msg("deploy foo"),
        "at column 8: expected name=value, found `foo`"
    );
    assert_eq!(
            msg("deploy 1x=1"),
            "at column 8: bad parameter name `1x`: names start with a letter or _ and contain letters, digits, _ or -"
        );
    assert_eq!(
        msg("deploy env=1 env=2"),
        "at column 14: parameter `env` given twice"
    );
    assert_eq!(
        msg("deploy --force"),
        "at column 8: unknown flag `--force` (the only flag is --dry-run)"
    );
    assert_eq!(
        msg("approve a b"),
        "at column 11: `approve` takes exactly one request id"
    );
    assert_eq!(
        msg("status"),
        "at column 7: missing request id after `status`"
    );
    assert_eq!(
            msg("Deploy!"),
            "at column 1: bad op name `Deploy!`: op names start with a lowercase letter and contain only lowercase letters, digits, ., _ or -"
        );
    assert_eq!(
        msg("a\0"),
        "at column 2: control character U+0000 is not allowed"
    );
    assert_eq!(
        msg(&"x".repeat(MAX_COMMAND_LEN + 1)),
        "at column 1: command is longer than 16384 bytes"
    );
    assert_eq!(
        msg("deploy x=\"a\"b"),
        "at column 13: unexpected text after the closing quote"
    );
    let long = format!("deploy {}", "y".repeat(100));
    assert_eq!(
        msg(&long),
        format!(
            "at column 8: expected name=value, found `{}…`",
            "y".repeat(64)
        )
    );
}

#[test]
fn render_forms() {
    let c = run(
        "deploy",
        &[
            ("a", "b=c"),
            ("e", ""),
            ("m", "x y\n\"q\"\\"),
            ("s", "it's"),
        ],
        true,
    );
    assert_eq!(
        c.render(),
        r#"deploy a=b=c e="" m="x y\n\"q\"\\" s="it's" --dry-run"#
    );
    assert_eq!(c.to_string(), c.render());
    assert_eq!(deny("r1", Some("no")).render(), "deny r1 \"no\"");
    assert_eq!(deny("r1", None).render(), "deny r1");
    assert_eq!(help(None).render(), "help");
    assert_eq!(help(Some("x")).render(), "help x");
}

#[test]
fn name_predicates() {
    assert!(is_valid_op_name("deploy"));
    assert!(is_valid_op_name("user.create"));
    assert!(is_valid_op_name("a1-b_c.d"));
    assert!(is_valid_op_name(&"a".repeat(64)));
    assert!(!is_valid_op_name(&"a".repeat(65)));
    assert!(!is_valid_op_name(""));
    assert!(!is_valid_op_name("help"));
    assert!(!is_valid_op_name("a..b"));
    assert!(!is_valid_op_name("a."));
    assert!(!is_valid_op_name("a-"));
    assert!(!is_valid_op_name("Deploy"));
    assert!(is_valid_param_name("env"));
    assert!(is_valid_param_name("_X-1"));
    assert!(is_valid_param_name(&"p".repeat(64)));
    assert!(!is_valid_param_name(&"p".repeat(65)));
    assert!(!is_valid_param_name(""));
    assert!(!is_valid_param_name("1x"));
    assert!(!is_valid_param_name("-x"));
    assert!(!is_valid_param_name("a.b"));
    assert!(is_valid_request_id("01HXYZ-a_b"));
    assert!(!is_valid_request_id(""));
    assert!(!is_valid_request_id(&"i".repeat(65)));
}

#[test]
fn suggestions() {
    let ops = ["deploy", "user.create"];
    assert_eq!(suggest("deplyo", ops), Some("deploy"));
    assert_eq!(suggest("zzz", ops), None);
    assert_eq!(suggest("DEPLOY", ops), Some("deploy"));
    assert_eq!(suggest("user", ops), Some("user.create"));
    assert_eq!(suggest("", ops), None);
    // Ties go to the first candidate in lexical order, whatever the input order.
    assert_eq!(suggest("ab", ["ac", "aa"]), Some("aa"));
    assert_eq!(suggest("ab", ["aa", "ac"]), Some("aa"));
    // The closest candidate wins over a mere prefix match.
    assert_eq!(suggest("dep", ["deploy", "dup"]), Some("dup"));
}

fn op_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9._-]{0,20}".prop_filter("valid op name", |s| is_valid_op_name(s))
}

fn param_name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_-]{0,20}"
}

fn request_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,64}"
}

fn text_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>().prop_filter("no control chars", |c| !c.is_control()),
        2 => prop::sample::select(vec![
            '"', '\\', '“', '”', '\'', ' ', '\n', '\t', '=', 'n', 't', 'a',
            '\u{a0}', '\u{2003}', '—', '–', '-',
        ]),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(text_char(), 0..24).prop_map(|v| v.into_iter().collect())
}

fn command() -> impl Strategy<Value = Command> {
    let args = prop::collection::vec((param_name(), text()), 0..6).prop_map(|v| {
        let mut seen = HashSet::new();
        v.into_iter()
            .filter(|(n, _)| seen.insert(n.clone()))
            .collect::<Vec<_>>()
    });
    let reason = prop::option::of(
        text()
            .prop_map(|s| s.trim().to_string())
            .prop_filter("non-empty", |s| !s.is_empty()),
    );
    prop_oneof![
        4 => (op_name(), args, any::<bool>())
            .prop_map(|(op, args, dry_run)| Command::Run { op, args, dry_run }),
        1 => prop::option::of(op_name()).prop_map(|op| Command::Help { op }),
        1 => request_id().prop_map(|id| Command::Approve { id }),
        2 => (request_id(), reason).prop_map(|(id, reason)| Command::Deny { id, reason }),
        1 => request_id().prop_map(|id| Command::Cancel { id }),
        1 => request_id().prop_map(|id| Command::Status { id }),
        1 => request_id().prop_map(|id| Command::Retry { id }),
    ]
}

/// Inputs made of grammar fragments, to reach deep parser paths.
fn grammarish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "deploy",
            "deny",
            "help",
            "approve",
            "r1",
            "x",
            "=",
            "\"",
            "“",
            "”",
            "\\",
            " ",
            "\n",
            "\t",
            "--dry-run",
            "—dry-run",
            "—",
            "-",
            "a b",
            "é",
            "\\\"",
            "\\n",
        ]),
        0..16,
    )
    .prop_map(|v| v.concat())
}

fn check_error_column(input: &str) {
    if let Err(e) = parse(input) {
        assert!(e.column >= 1, "{input:?}: {e}");
        assert!(e.column <= input.chars().count() + 1, "{input:?}: {e}");
    }
}

proptest! {
    #[test]
    fn never_panics_on_strings(s in any::<String>()) {
        check_error_column(&s);
    }

    #[test]
    fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_error_column(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn parsed_commands_render_back(s in grammarish()) {
        check_error_column(&s);
        if let Ok(cmd) = parse(&s) {
            prop_assert_eq!(parse(&cmd.render()), Ok(cmd));
        }
    }

    #[test]
    fn render_parse_roundtrip(cmd in command()) {
        let text = cmd.render();
        prop_assert_eq!(parse(&text), Ok(cmd), "rendered: {:?}", text);
    }
}
