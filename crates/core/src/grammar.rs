//! The one command grammar shared by every YouOps frontend (Slack, GitHub
//! issue comments, git commit trailers and the CLI).
//!
//! ```text
//! OP [name=value | name="quoted value"]... [--dry-run]
//! help [OP]
//! approve ID
//! deny ID [reason ...]
//! cancel ID
//! status ID
//! retry ID
//! ```
//!
//! This module is a pure syntax parser: it does not know the catalog, so
//! whether an op exists is checked elsewhere (which may call [`suggest`] for a
//! "did you mean"). Every [`ParseError`] carries a 1-based column, counted in
//! characters, that points at the offending token or character.
//!
//! Chat clients are accommodated: typographic quotes `“...”` work like
//! straight quotes (without escapes), and `—dry-run` / `–dry-run` (em / en
//! dash) work like `--dry-run`.
//!
//! ```
//! use youops_core::grammar::{parse, Command, ParseErrorKind};
//!
//! let cmd = parse(r#"deploy env=prod msg="hello world" --dry-run"#).unwrap();
//! assert_eq!(
//!     cmd,
//!     Command::Run {
//!         op: "deploy".into(),
//!         args: vec![
//!             ("env".into(), "prod".into()),
//!             ("msg".into(), "hello world".into()),
//!         ],
//!         dry_run: true,
//!     }
//! );
//! // The canonical text form parses back to the same command.
//! assert_eq!(parse(&cmd.render()), Ok(cmd));
//!
//! let err = parse("deploy env=prod env=dev").unwrap_err();
//! assert_eq!(err.column, 17);
//! assert!(matches!(err.kind, ParseErrorKind::DuplicateParam { .. }));
//! assert_eq!(err.to_string(), "at column 17: parameter `env` given twice");
//! ```

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted command, in bytes of UTF-8.
pub const MAX_COMMAND_LEN: usize = 16 * 1024;

/// Longest op name or parameter name, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// Longest request id, in characters.
pub const MAX_ID_LEN: usize = 64;

/// The reserved first words of the grammar. They can never be op names.
pub const KEYWORDS: [&str; 6] = ["help", "approve", "deny", "cancel", "status", "retry"];

/// The canonical dry-run flag.
const DRY_RUN_FLAG: &str = "--dry-run";

/// Spellings accepted for the dry-run flag: chat clients autocorrect `--`
/// into an em dash (U+2014) or an en dash (U+2013).
const DRY_RUN_SPELLINGS: [&str; 3] = [DRY_RUN_FLAG, "\u{2014}dry-run", "\u{2013}dry-run"];

/// Opening typographic quote (U+201C).
const SMART_OPEN: char = '\u{201C}';
/// Closing typographic quote (U+201D).
const SMART_CLOSE: char = '\u{201D}';

/// How much of an offending token an error message quotes, in characters.
const EXCERPT_LEN: usize = 64;

/// A parsed command.
///
/// Serialized with an internal `command` tag, e.g.
/// `{"command":"approve","id":"r1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// `OP [name=value]... [--dry-run]`: run an op.
    Run {
        /// The op name (syntactically valid, see [`is_valid_op_name`]).
        op: String,
        /// Parameters in the order given; names are unique.
        args: Vec<(String, String)>,
        /// Whether `--dry-run` was given.
        dry_run: bool,
    },
    /// `help [OP]`: general help, or help for one op (or keyword).
    Help {
        /// The op (or keyword) asked about, if any.
        op: Option<String>,
    },
    /// `approve ID`: approve a pending request.
    Approve {
        /// The request id.
        id: String,
    },
    /// `deny ID [reason ...]`: deny a pending request.
    Deny {
        /// The request id.
        id: String,
        /// Free-text reason; `None` when none was given.
        reason: Option<String>,
    },
    /// `cancel ID`: cancel a request.
    Cancel {
        /// The request id.
        id: String,
    },
    /// `status ID`: show the status of a request.
    Status {
        /// The request id.
        id: String,
    },
    /// `retry ID`: run a finished request again.
    Retry {
        /// The request id.
        id: String,
    },
}

impl Command {
    /// Canonical text form; `parse(&c.render()) == Ok(c)` for every valid command.
    ///
    /// Values are written bare when that is unambiguous, otherwise in straight
    /// quotes with `\"`, `\\`, `\n` and `\t` escapes; `--dry-run` comes last;
    /// a deny reason is always quoted.
    pub fn render(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Command {
    /// Writes the same text as [`Command::render`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Run { op, args, dry_run } => {
                f.write_str(op)?;
                for (name, value) in args {
                    write!(f, " {name}=")?;
                    write_value(f, value)?;
                }
                if *dry_run {
                    write!(f, " {DRY_RUN_FLAG}")?;
                }
                Ok(())
            }
            Command::Help { op: None } => f.write_str("help"),
            Command::Help { op: Some(op) } => write!(f, "help {op}"),
            Command::Approve { id } => write!(f, "approve {id}"),
            Command::Deny { id, reason } => {
                write!(f, "deny {id}")?;
                if let Some(reason) = reason {
                    f.write_str(" ")?;
                    write_quoted(f, reason)?;
                }
                Ok(())
            }
            Command::Cancel { id } => write!(f, "cancel {id}"),
            Command::Status { id } => write!(f, "status {id}"),
            Command::Retry { id } => write!(f, "retry {id}"),
        }
    }
}

/// Writes a parameter value, bare when that is unambiguous, else quoted.
fn write_value(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    let needs_quotes = value.is_empty()
        || value.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '"' | '\'' | '\\' | SMART_OPEN | SMART_CLOSE)
        });
    if needs_quotes {
        write_quoted(f, value)
    } else {
        f.write_str(value)
    }
}

/// Writes `"..."` with `\"`, `\\`, `\n` and `\t` escaped.
fn write_quoted(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in value.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// A syntax error, located at a 1-based column counted in characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at column {column}: {kind}")]
pub struct ParseError {
    /// 1-based column of the offending token or character, counted in
    /// characters (not bytes) of the original input. For a missing token it
    /// is the column just past the word that needed it.
    pub column: usize,
    /// What went wrong.
    pub kind: ParseErrorKind,
}

/// What went wrong in a [`ParseError`].
///
/// Strings quoting the input (names, tokens) are cut to 64 characters
/// followed by `…` when longer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The input is empty or only whitespace.
    #[error("empty command")]
    Empty,
    /// The input is longer than [`MAX_COMMAND_LEN`] bytes.
    #[error("command is longer than {max} bytes", max = MAX_COMMAND_LEN)]
    TooLong {
        /// The input's length in bytes.
        len: usize,
    },
    /// A control character other than whitespace (tab, newline, ...).
    #[error("control character {} is not allowed", codepoint(.ch))]
    ControlChar {
        /// The offending character.
        ch: char,
    },
    /// The first word is neither a keyword nor a valid op name.
    #[error("bad op name `{name}`: {reason}")]
    BadOpName {
        /// The offending word.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A quoted parameter value is never closed; the column is the opening
    /// quote's. (A deny reason with an unclosed quote is kept as plain text.)
    #[error("unbalanced quote: the value opened here is never closed")]
    UnbalancedQuote,
    /// Text is glued to a closing quote, as in `x="a"b`.
    #[error("unexpected text after the closing quote")]
    TextAfterQuote,
    /// A quote character inside an unquoted value, as in `x=a"b"`.
    #[error(
        "unexpected quote `{quote}` inside an unquoted value (a quoted value must start right after `=`)"
    )]
    QuoteInValue {
        /// The quote character found.
        quote: char,
    },
    /// A token after the op that is neither `name=value` nor a flag.
    #[error("expected name=value, found `{found}`")]
    ExpectedParam {
        /// The offending token.
        found: String,
    },
    /// A token starting with `=`.
    #[error("missing parameter name before `=`")]
    MissingParamName,
    /// A parameter name that breaks the naming rules.
    #[error("bad parameter name `{name}`: {reason}")]
    BadParamName {
        /// The offending name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The same parameter name twice; the column is the second one's.
    #[error("parameter `{name}` given twice")]
    DuplicateParam {
        /// The repeated name.
        name: String,
    },
    /// A flag other than `--dry-run`.
    #[error("unknown flag `{flag}` (the only flag is --dry-run)")]
    UnknownFlag {
        /// The offending token.
        flag: String,
    },
    /// A keyword that needs a request id has none.
    #[error("missing request id after `{command}`")]
    MissingId {
        /// The keyword (`approve`, `deny`, ...).
        command: &'static str,
    },
    /// More than one word after `approve`, `cancel`, `status` or `retry`;
    /// the column is the first extra word's.
    #[error("`{command}` takes exactly one request id")]
    TooManyIds {
        /// The keyword.
        command: &'static str,
    },
    /// A request id that is not 1-64 ASCII letters, digits, `-` or `_`.
    #[error("bad request id `{id}`: ids are 1 to 64 ASCII letters, digits, - or _")]
    BadId {
        /// The offending word.
        id: String,
    },
    /// More than one word after `help`; the column is the extra word's.
    #[error("`help` takes at most one op name")]
    TooManyHelpArgs,
}

/// Formats a char as `U+XXXX` for error messages.
fn codepoint(c: &char) -> String {
    format!("U+{:04X}", u32::from(*c))
}

/// Parses one command. See the [module docs](self) for the grammar.
pub fn parse(input: &str) -> Result<Command, ParseError> {
    if input.len() > MAX_COMMAND_LEN {
        return Err(error(0, ParseErrorKind::TooLong { len: input.len() }));
    }
    let chars: Vec<char> = input.chars().collect();
    if let Some(i) = chars
        .iter()
        .position(|c| c.is_control() && !c.is_whitespace())
    {
        return Err(error(i, ParseErrorKind::ControlChar { ch: chars[i] }));
    }
    let mut end = chars.len();
    while end > 0 && chars[end - 1].is_whitespace() {
        end -= 1;
    }
    let mut parser = Parser {
        chars: &chars[..end],
        pos: 0,
    };
    parser.skip_ws();
    if parser.at_end() {
        return Err(error(0, ParseErrorKind::Empty));
    }
    let (start, kw_end) = parser.bare_token();
    let word = parser.text(start, kw_end);
    match word.as_str() {
        "help" => parser.help(),
        "approve" => parser
            .single_id("approve", kw_end)
            .map(|id| Command::Approve { id }),
        "deny" => parser.deny(kw_end),
        "cancel" => parser
            .single_id("cancel", kw_end)
            .map(|id| Command::Cancel { id }),
        "status" => parser
            .single_id("status", kw_end)
            .map(|id| Command::Status { id }),
        "retry" => parser
            .single_id("retry", kw_end)
            .map(|id| Command::Retry { id }),
        _ => parser.run(start, word),
    }
}

/// Builds an error from a 0-based char index.
fn error(index: usize, kind: ParseErrorKind) -> ParseError {
    ParseError {
        column: index + 1,
        kind,
    }
}

/// Cuts text quoted in an error message to a readable length.
fn excerpt(chars: &[char]) -> String {
    if chars.len() > EXCERPT_LEN {
        let mut s: String = chars[..EXCERPT_LEN].iter().collect();
        s.push('…');
        s
    } else {
        chars.iter().collect()
    }
}

/// A cursor over the input's chars, already trimmed at the end.
struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn skip_ws(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    /// Index of the first whitespace at or after `from`, or the end.
    fn token_end(&self, from: usize) -> usize {
        let mut i = from;
        while i < self.chars.len() && !self.chars[i].is_whitespace() {
            i += 1;
        }
        i
    }

    /// Consumes a whitespace-delimited token; returns its char range.
    fn bare_token(&mut self) -> (usize, usize) {
        let start = self.pos;
        self.pos = self.token_end(start);
        (start, self.pos)
    }

    fn text(&self, start: usize, end: usize) -> String {
        self.chars[start..end].iter().collect()
    }

    /// `help [OP]`.
    fn help(&mut self) -> Result<Command, ParseError> {
        self.skip_ws();
        if self.at_end() {
            return Ok(Command::Help { op: None });
        }
        let (start, end) = self.bare_token();
        let op = self.text(start, end);
        if !KEYWORDS.contains(&op.as_str()) {
            if let Some(reason) = op_name_problem(&op) {
                return Err(error(
                    start,
                    ParseErrorKind::BadOpName {
                        name: excerpt(&self.chars[start..end]),
                        reason,
                    },
                ));
            }
        }
        self.skip_ws();
        if !self.at_end() {
            return Err(error(self.pos, ParseErrorKind::TooManyHelpArgs));
        }
        Ok(Command::Help { op: Some(op) })
    }

    /// Reads the request id after `command` (whose last char ends at `kw_end`).
    fn id(&mut self, command: &'static str, kw_end: usize) -> Result<String, ParseError> {
        self.skip_ws();
        if self.at_end() {
            return Err(error(kw_end, ParseErrorKind::MissingId { command }));
        }
        let (start, end) = self.bare_token();
        let id = self.text(start, end);
        if !is_valid_request_id(&id) {
            return Err(error(
                start,
                ParseErrorKind::BadId {
                    id: excerpt(&self.chars[start..end]),
                },
            ));
        }
        Ok(id)
    }

    /// `approve|cancel|status|retry ID`.
    fn single_id(&mut self, command: &'static str, kw_end: usize) -> Result<String, ParseError> {
        let id = self.id(command, kw_end)?;
        self.skip_ws();
        if !self.at_end() {
            return Err(error(self.pos, ParseErrorKind::TooManyIds { command }));
        }
        Ok(id)
    }

    /// `deny ID [reason ...]`.
    fn deny(&mut self, kw_end: usize) -> Result<Command, ParseError> {
        let id = self.id("deny", kw_end)?;
        self.skip_ws();
        let rest = &self.chars[self.pos..];
        let reason = match rest.first() {
            None => None,
            Some(&q) if q == '"' || q == SMART_OPEN => match scan_quoted(rest, 0) {
                Some((text, after)) if after == rest.len() => Some(text).filter(|t| !t.is_empty()),
                _ => Some(rest.iter().collect()),
            },
            Some(_) => Some(rest.iter().collect()),
        };
        Ok(Command::Deny { id, reason })
    }

    /// `OP [name=value]... [--dry-run]`; the op token is already consumed.
    fn run(&mut self, op_start: usize, op: String) -> Result<Command, ParseError> {
        if let Some(reason) = op_name_problem(&op) {
            return Err(error(
                op_start,
                ParseErrorKind::BadOpName {
                    name: excerpt(&self.chars[op_start..self.pos]),
                    reason,
                },
            ));
        }
        let mut args: Vec<(String, String)> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut dry_run = false;
        loop {
            self.skip_ws();
            if self.at_end() {
                break;
            }
            let start = self.pos;
            if matches!(self.chars[start], '-' | '\u{2014}' | '\u{2013}') {
                let (start, end) = self.bare_token();
                let flag = self.text(start, end);
                if DRY_RUN_SPELLINGS.contains(&flag.as_str()) {
                    dry_run = true;
                    continue;
                }
                return Err(error(
                    start,
                    ParseErrorKind::UnknownFlag {
                        flag: excerpt(&self.chars[start..end]),
                    },
                ));
            }
            let mut eq = start;
            while eq < self.chars.len() && self.chars[eq] != '=' && !self.chars[eq].is_whitespace()
            {
                eq += 1;
            }
            if self.chars.get(eq) != Some(&'=') {
                return Err(error(
                    start,
                    ParseErrorKind::ExpectedParam {
                        found: excerpt(&self.chars[start..eq]),
                    },
                ));
            }
            if eq == start {
                return Err(error(start, ParseErrorKind::MissingParamName));
            }
            let name = self.text(start, eq);
            if let Some(reason) = param_name_problem(&name) {
                return Err(error(
                    start,
                    ParseErrorKind::BadParamName {
                        name: excerpt(&self.chars[start..eq]),
                        reason,
                    },
                ));
            }
            if !seen.insert(name.clone()) {
                return Err(error(start, ParseErrorKind::DuplicateParam { name }));
            }
            self.pos = eq + 1;
            let value = self.value()?;
            args.push((name, value));
        }
        Ok(Command::Run { op, args, dry_run })
    }

    /// Reads a value starting right after `=`.
    fn value(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        match self.chars.get(start) {
            Some(&q) if q == '"' || q == SMART_OPEN => {
                let Some((text, after)) = scan_quoted(self.chars, start) else {
                    return Err(error(start, ParseErrorKind::UnbalancedQuote));
                };
                if self.chars.get(after).is_some_and(|c| !c.is_whitespace()) {
                    return Err(error(after, ParseErrorKind::TextAfterQuote));
                }
                self.pos = after;
                Ok(text)
            }
            _ => {
                let (start, end) = self.bare_token();
                let token = &self.chars[start..end];
                if let Some(i) = token.iter().position(|&c| is_quote(c)) {
                    return Err(error(
                        start + i,
                        ParseErrorKind::QuoteInValue { quote: token[i] },
                    ));
                }
                Ok(token.iter().collect())
            }
        }
    }
}

/// Quote characters that may not appear in a bare value.
fn is_quote(c: char) -> bool {
    matches!(c, '"' | SMART_OPEN | SMART_CLOSE)
}

/// Scans a quoted string whose opening quote (`"` or `“`) is at `open`.
/// Returns the unquoted text and the index just past the closing quote, or
/// `None` when it is never closed.
fn scan_quoted(chars: &[char], open: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut i = open + 1;
    if chars.get(open) == Some(&SMART_OPEN) {
        while let Some(&c) = chars.get(i) {
            if c == SMART_CLOSE {
                return Some((out, i + 1));
            }
            out.push(c);
            i += 1;
        }
        return None;
    }
    while let Some(&c) = chars.get(i) {
        match c {
            '"' => return Some((out, i + 1)),
            '\\' => match chars.get(i + 1) {
                Some('"') => {
                    out.push('"');
                    i += 2;
                }
                Some('\\') => {
                    out.push('\\');
                    i += 2;
                }
                Some('n') => {
                    out.push('\n');
                    i += 2;
                }
                Some('t') => {
                    out.push('\t');
                    i += 2;
                }
                // Any other sequence keeps the backslash literally.
                _ => {
                    out.push('\\');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

/// Why `s` is not an op name (ignoring the reserved keywords), if it isn't.
fn op_name_problem(s: &str) -> Option<&'static str> {
    let mut chars = s.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok {
        Some("op names start with a lowercase letter and contain only lowercase letters, digits, ., _ or -")
    } else if s.len() > MAX_NAME_LEN {
        Some("op names are at most 64 characters long")
    } else if s.contains("..") {
        Some("op names must not contain `..`")
    } else if s.ends_with(['.', '-']) {
        Some("op names must not end with . or -")
    } else {
        None
    }
}

/// Why `s` is not a parameter name, if it isn't.
fn param_name_problem(s: &str) -> Option<&'static str> {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if !first_ok || !rest_ok {
        Some("names start with a letter or _ and contain letters, digits, _ or -")
    } else if s.len() > MAX_NAME_LEN {
        Some("names are at most 64 characters long")
    } else {
        None
    }
}

/// Whether `s` is a syntactically valid op name (used by config validation too).
///
/// Op names are ASCII: a lowercase letter, then lowercase letters, digits,
/// `.`, `_` or `-`; at most 64 characters; no `..`; not ending with `.` or
/// `-`. The keywords in [`KEYWORDS`] are not op names, since a command
/// starting with one is never parsed as a run.
pub fn is_valid_op_name(s: &str) -> bool {
    op_name_problem(s).is_none() && !KEYWORDS.contains(&s)
}

/// Whether `s` is a syntactically valid parameter name.
///
/// Parameter names are ASCII: a letter or `_`, then letters, digits, `_` or
/// `-`; at most 64 characters.
pub fn is_valid_param_name(s: &str) -> bool {
    param_name_problem(s).is_none()
}

/// Whether `s` is a syntactically valid request id: 1 to 64 ASCII letters,
/// digits, `-` or `_`.
pub fn is_valid_request_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// Closest candidate for a mistyped word (e.g. op name), if any is close enough to be a useful "did you mean".
///
/// Comparison is case-insensitive. A candidate qualifies when its
/// Damerau-Levenshtein distance to `word` is at most `max(1, len / 3)`
/// (`len` = characters in `word`), or when `word` has at least 3 characters
/// and is a prefix of it. The qualifying candidate with the smallest distance
/// wins; ties go to the first in lexical order. Empty words and candidates
/// never match.
pub fn suggest<'a, I: IntoIterator<Item = &'a str>>(word: &str, candidates: I) -> Option<&'a str> {
    let word = word.trim().to_lowercase();
    let word_len = word.chars().count();
    if word_len == 0 {
        return None;
    }
    let threshold = (word_len / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        if candidate.is_empty() {
            continue;
        }
        let lower = candidate.to_lowercase();
        let distance = strsim::damerau_levenshtein(&word, &lower);
        let prefix = word_len >= 3 && lower.starts_with(&word);
        if distance > threshold && !prefix {
            continue;
        }
        let better = match best {
            None => true,
            Some((d, c)) => distance < d || (distance == d && candidate < c),
        };
        if better {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
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
}
