//! Markdown → steps: every shell block of a page, with the checks written
//! beside it in a hidden `<!-- doccheck … -->` comment.
//!
//! ````markdown
//! <!-- doccheck
//! exit=0 contains="hello, Ada"
//! exit=2 contains="requester" capture.ID="\"id\": ?\"([0-9A-Z]{26})\""
//! -->
//! ```sh
//! curl -s http://127.0.0.1:8080/…
//! youops approve <ID>
//! ```
//! ````
//!
//! The comment's first line may carry options for the whole block
//! (`<!-- doccheck: skip="needs a Slack workspace" -->`); each further line
//! gives the checks of one command of the block, in order (a command is a
//! line, with its `\` continuations; comments and blank lines are not
//! commands). Commands without a line of their own must exit 0.
//!
//! A comment with `signal=` stands alone: it sends that signal to the
//! background process (the README's Ctrl-C or `kill -HUP` step).
//!
//! Every `sh`, `bash`, `shell` or `console` block needs a comment, so a new
//! command in the docs is either checked or says why it cannot be.

use std::collections::BTreeMap;
use std::fmt;

/// What to check of one command, or of one signal step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checks {
    /// Expected exit code (default 0).
    pub exit: Option<i32>,
    /// Phrases the output (stdout and stderr) must contain.
    pub contains: Vec<String>,
    /// Phrases it must not contain.
    pub not_contains: Vec<String>,
    /// `NAME` → a regex whose first group, found in stdout, replaces `<NAME>`
    /// in later commands.
    pub capture: BTreeMap<String, String>,
    /// Not run; the reason.
    pub skip: Option<String>,
    /// Run in the background; it must answer this URL with 200 before the
    /// next step runs.
    pub background: Option<String>,
    /// Longest run (or, in the background, longest wait for health), seconds.
    pub timeout: Option<u64>,
    /// A signal for the background process (`INT`, `HUP`, `TERM`).
    pub signal: Option<String>,
    /// A phrase the background process's output must show (waited for).
    pub log_contains: Vec<String>,
}

/// One thing to do, in page order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A shell command.
    Command {
        /// 1-based line of the page where it starts.
        line: usize,
        /// The command as written (continuations joined by the shell).
        text: String,
        /// Its checks.
        checks: Checks,
    },
    /// A signal to the background process.
    Signal {
        /// 1-based line of the comment.
        line: usize,
        /// Its checks (`signal` is set).
        checks: Checks,
    },
}

/// A page that cannot be checked as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

const SHELLS: [&str; 4] = ["sh", "bash", "shell", "console"];

/// The steps of a page, or every reason it cannot be checked.
pub fn parse(text: &str) -> Result<Vec<Step>, Vec<ParseError>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut p = PageParser {
        lines: &lines,
        i: 0,
        steps: Vec::new(),
        errors: Vec::new(),
        pending: None,
    };
    while p.i < lines.len() {
        let line = lines[p.i].trim_start();
        if let Some(rest) = line.strip_prefix("<!--") {
            let rest = rest.trim_start();
            if let Some(rest) = rest.strip_prefix("doccheck") {
                if !p.doccheck_comment(rest) {
                    break;
                }
                continue;
            }
        }
        if let Some(info) = line.strip_prefix("```") {
            p.fenced_block(info);
            continue;
        }
        if !line.is_empty() {
            p.drop_pending();
        }
        p.i += 1;
    }
    p.drop_pending();
    if p.errors.is_empty() {
        Ok(p.steps)
    } else {
        Err(p.errors)
    }
}

/// The state of [`parse`] as it walks a page, line by line.
struct PageParser<'a> {
    lines: &'a [&'a str],
    /// The current line (0-based).
    i: usize,
    steps: Vec<Step>,
    errors: Vec<ParseError>,
    /// The last doccheck comment not yet used by a block.
    pending: Option<Pending>,
}

impl PageParser<'_> {
    /// An unused pending comment is an error.
    fn drop_pending(&mut self) {
        if let Some(p) = self.pending.take() {
            self.errors.push(dangling(p.line));
        }
    }

    /// The doccheck comment at the current line (`rest` follows the word
    /// `doccheck`): a signal step, or the checks of the next block. Moves past
    /// the comment; false when it is not closed (the page is read no further).
    fn doccheck_comment(&mut self, rest: &str) -> bool {
        let start = self.i + 1;
        let mut body = vec![(start, rest.trim_start_matches(':').to_string())];
        let mut closed = false;
        loop {
            let s = &mut body.last_mut().expect("one line at least").1;
            if let Some(pos) = s.find("-->") {
                s.truncate(pos);
                closed = true;
                break;
            }
            self.i += 1;
            if self.i >= self.lines.len() {
                break;
            }
            body.push((self.i + 1, self.lines[self.i].to_string()));
        }
        if !closed {
            self.errors
                .push(err(start, "a doccheck comment is not closed with -->"));
            return false;
        }
        self.drop_pending();
        match comment(&body) {
            Ok((block, per)) if block.signal.is_some() => {
                if !per.is_empty() {
                    self.errors
                        .push(err(start, "a signal step takes its checks on one line"));
                }
                self.steps.push(Step::Signal {
                    line: start,
                    checks: block,
                });
            }
            Ok((block, per)) => {
                self.pending = Some(Pending {
                    line: start,
                    block,
                    per,
                })
            }
            Err(e) => self.errors.extend(e),
        }
        self.i += 1;
        true
    }

    /// The fenced block opening at the current line (`info` follows the
    /// backticks): a shell block's commands become steps with the pending
    /// comment's checks. Moves past the closing fence.
    fn fenced_block(&mut self, info: &str) {
        let lang = info.split_whitespace().next().unwrap_or("");
        let fence_line = self.i + 1;
        let mut body = Vec::new();
        self.i += 1;
        while self.i < self.lines.len() && !self.lines[self.i].trim_start().starts_with("```") {
            body.push((self.i + 1, self.lines[self.i]));
            self.i += 1;
        }
        self.i += 1;
        if !SHELLS.contains(&lang) {
            self.drop_pending();
            return;
        }
        let Some(Pending { block, per, .. }) = self.pending.take() else {
            self.errors.push(err(
                fence_line,
                "a shell block without a doccheck comment (give its checks, or skip=\"why\")",
            ));
            return;
        };
        let commands = commands(&body);
        if per.len() > commands.len() {
            self.errors.push(err(
                per[commands.len()].0,
                &format!(
                    "{} lines of checks for {} command(s) in the block below",
                    per.len(),
                    commands.len()
                ),
            ));
        }
        for (k, (line, text)) in commands.into_iter().enumerate() {
            let mut checks = per.get(k).map(|(_, c)| c.clone()).unwrap_or_default();
            if checks.skip.is_none() {
                checks.skip = block.skip.clone();
            }
            self.steps.push(Step::Command { line, text, checks });
        }
    }
}

/// A doccheck comment waiting for its shell block.
struct Pending {
    line: usize,
    block: Checks,
    per: Vec<(usize, Checks)>,
}

fn dangling(line: usize) -> ParseError {
    err(line, "this doccheck comment is followed by no shell block")
}

fn err(line: usize, message: &str) -> ParseError {
    ParseError {
        line,
        message: message.to_string(),
    }
}

/// The commands of a block: `\`-continued lines joined, comments and blank
/// lines dropped (a `#` after the command is the shell's business).
fn commands(body: &[(usize, &str)]) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut open = false;
    for (n, l) in body {
        let t = l.trim();
        if open {
            let last = out.last_mut().expect("open continues a command");
            last.1.push('\n');
            last.1.push_str(l);
            open = t.ends_with('\\');
            continue;
        }
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        out.push((*n, l.to_string()));
        open = t.ends_with('\\');
    }
    out
}

type CommentChecks = (Checks, Vec<(usize, Checks)>);

/// The block options (first line) and the per-command checks (the others).
fn comment(body: &[(usize, String)]) -> Result<CommentChecks, Vec<ParseError>> {
    let mut errors = Vec::new();
    let mut block = Checks::default();
    let mut per = Vec::new();
    for (k, (line, text)) in body.iter().enumerate() {
        if text.trim().is_empty() {
            continue;
        }
        match checks(text) {
            Ok(c) if k == 0 => block = c,
            Ok(c) => per.push((*line, c)),
            Err(m) => errors.push(err(*line, &m)),
        }
    }
    if errors.is_empty() {
        Ok((block, per))
    } else {
        Err(errors)
    }
}

/// One line of `key=value` pairs; values may be "quoted" (`\"` and `\\` inside).
pub fn checks(text: &str) -> Result<Checks, String> {
    let mut c = Checks::default();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = match rest.find(|ch: char| ch == '=' || ch.is_whitespace()) {
            Some(p) => (&rest[..p], &rest[p..]),
            None => (rest, ""),
        };
        let (value, after) = if let Some(v) = after.strip_prefix('=') {
            value(v)?
        } else {
            (String::new(), after)
        };
        rest = after.trim_start();
        match key {
            "exit" => {
                c.exit = Some(
                    value
                        .parse()
                        .map_err(|_| format!("exit={value}: not an exit code"))?,
                )
            }
            "contains" => c.contains.push(value),
            "not-contains" => c.not_contains.push(value),
            "skip" if !value.is_empty() => c.skip = Some(value),
            "skip" => return Err("skip needs a reason: skip=\"why\"".into()),
            "background" if value.starts_with("http://") => c.background = Some(value),
            "background" => {
                return Err("background needs the URL to probe: background=http://…".into())
            }
            "timeout" => {
                c.timeout = Some(
                    value
                        .parse()
                        .map_err(|_| format!("timeout={value}: not a number of seconds"))?,
                )
            }
            "signal" if ["INT", "HUP", "TERM"].contains(&value.as_str()) => c.signal = Some(value),
            "signal" => return Err(format!("signal={value}: one of INT, HUP, TERM")),
            "log-contains" => c.log_contains.push(value),
            k if k.starts_with("capture.") && k.len() > 8 => {
                let name = &k[8..];
                if !name.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_') {
                    return Err(format!("{k}: capture names are UPPER_CASE"));
                }
                c.capture.insert(name.to_string(), value);
            }
            "" => return Err(format!("unexpected `{rest}`")),
            k => return Err(format!("unknown check `{k}`")),
        }
    }
    Ok(c)
}

/// A value: quoted (up to the closing quote) or bare (up to whitespace).
fn value(s: &str) -> Result<(String, &str), String> {
    let Some(q) = s.strip_prefix('"') else {
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        return Ok((s[..end].to_string(), &s[end..]));
    };
    let mut out = String::new();
    let mut chars = q.char_indices();
    while let Some((i, ch)) = chars.next() {
        match ch {
            '"' => return Ok((out, &q[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e)) => out.push(e),
                None => break,
            },
            _ => out.push(ch),
        }
    }
    Err(format!("unclosed quote in `\"{q}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(step: &Step) -> (&str, &Checks) {
        match step {
            Step::Command { text, checks, .. } => (text.as_str(), checks),
            Step::Signal { .. } => panic!("not a command: {step:?}"),
        }
    }

    #[test]
    fn checks_lines() {
        let c = checks(r#"exit=2 contains="the \"requester\"" capture.ID="\"id\": \"(\\w+)\"""#)
            .unwrap();
        assert_eq!(c.exit, Some(2));
        assert_eq!(c.contains, vec![r#"the "requester""#]);
        assert_eq!(c.capture["ID"], r#""id": "(\w+)""#);
        let table: &[(&str, &str)] = &[
            ("exit=x", "not an exit code"),
            ("frobnicate=1", "unknown check `frobnicate`"),
            ("skip", "skip needs a reason"),
            ("signal=KILL", "one of INT, HUP, TERM"),
            ("capture.id=x", "UPPER_CASE"),
            ("contains=\"open", "unclosed quote"),
            ("background=8080", "needs the URL"),
        ];
        for (line, want) in table {
            let e = checks(line).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn a_block_takes_one_line_of_checks_per_command() {
        let md = "text\n<!-- doccheck\nexit=0 contains=\"hi\"\nexit=3\n-->\n```sh\n# a comment\necho hi\n\nfalse \\\n  --flag\ntrue   # ok\n```\n";
        let steps = parse(md).unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(cmd(&steps[0]).0, "echo hi");
        assert_eq!(cmd(&steps[0]).1.contains, vec!["hi"]);
        assert_eq!(cmd(&steps[1]).0, "false \\\n  --flag");
        assert_eq!(cmd(&steps[1]).1.exit, Some(3));
        assert_eq!(cmd(&steps[2]).1, &Checks::default());
        assert!(matches!(steps[2], Step::Command { line: 12, .. }));
    }

    #[test]
    fn block_options_and_signals() {
        let md = "<!-- doccheck: skip=\"needs Slack\" -->\n```bash\na\nb\n```\n\n<!-- doccheck: signal=HUP log-contains=\"reloaded\" -->\n\n```toml\nx = 1\n```\n";
        let steps = parse(md).unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(cmd(&steps[1]).1.skip.as_deref(), Some("needs Slack"));
        let Step::Signal { checks, line } = &steps[2] else {
            panic!("{:?}", steps[2])
        };
        assert_eq!((checks.signal.as_deref(), *line), (Some("HUP"), 7));
    }

    #[test]
    fn unchecked_and_dangling_are_errors() {
        let table: &[(&str, &str)] = &[
            (
                "```sh\nls\n```\n",
                "line 1: a shell block without a doccheck comment",
            ),
            (
                "<!-- doccheck -->\nsome prose\n```sh\nls\n```\n",
                "line 1: this doccheck comment is followed by no shell block",
            ),
            (
                "<!-- doccheck -->\n```toml\nx=1\n```\n",
                "line 1: this doccheck comment is followed by no shell block",
            ),
            (
                "<!-- doccheck\nexit=0\nexit=0\n-->\n```sh\nls\n```\n",
                "line 3: 2 lines of checks for 1 command(s)",
            ),
            (
                "<!-- doccheck\nexit=0\n",
                "line 1: a doccheck comment is not closed",
            ),
            (
                "<!-- doccheck: bogus -->\n```sh\nls\n```\n",
                "line 1: unknown check `bogus`",
            ),
        ];
        for (md, want) in table {
            let errs = parse(md).unwrap_err();
            let text = errs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            assert!(text.contains(want), "{md:?}: {text}");
        }
    }

    #[test]
    fn other_blocks_and_comments_are_left_alone() {
        let md = "<!-- a comment -->\n```toml\n[a]\n```\n```\nplain\n```\n";
        assert_eq!(parse(md).unwrap(), vec![]);
    }
}
