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
mod tests;
