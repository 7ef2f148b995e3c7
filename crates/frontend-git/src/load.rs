//! Loading the desired state of a commit: files parsed once per blob, the state
//! combined incrementally from the last one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use git2::{Oid, Repository};

use crate::config::{GitConfig, Kinds};
use crate::desired::{self, DesiredError, DesiredState, Resource};
use crate::repo;

/// Files parsed at once from which parsing is spread over threads.
const PARALLEL_PARSE_MIN_FILES: usize = 16;

pub(crate) type DesiredErrors = Vec<DesiredError>;
type ParsedFile = Result<Vec<Resource>, DesiredErrors>;

/// The files of a desired state, `(path, blob id)`, sorted.
type FileSet = Vec<(String, Oid)>;

/// A file to parse: its `(path, blob id)` and its text (or why it could not be read).
type Todo = ((String, Oid), Result<String, String>);
/// A parsed file: its `(path, blob id)` and its resources (or its problems).
type Done = ((String, Oid), ParsedFile);

#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// Parsed desired-state files by (path, blob id): unchanged files are not re-parsed.
    files: HashMap<(String, Oid), ParsedFile>,
    /// The last desired state combined without errors, and its files: the next
    /// one is made from it by swapping the resources of the files that changed,
    /// so a commit touching one file of many costs that file, not all of them.
    last: Option<(FileSet, Arc<DesiredState>)>,
}

/// The desired state at `commit` (blocking: reads the repository). The outer
/// error is a git failure; the inner one the problems of the desired state.
pub(crate) fn desired_at(
    cfg: &GitConfig,
    kinds: &Kinds,
    parsed: &mut Parsed,
    commit: Oid,
) -> Result<Result<Arc<DesiredState>, DesiredErrors>, String> {
    let r = repo::open(cfg)?;
    let files = match repo::desired_files(&r, commit, &cfg.path) {
        Ok(f) => f,
        Err(msg) => {
            return Ok(Err(vec![DesiredError {
                file: if cfg.path.is_empty() {
                    "(root)".into()
                } else {
                    cfg.path.clone()
                },
                line: 0,
                message: msg,
            }]))
        }
    };
    if let Some((last_files, state)) = &parsed.last {
        if *last_files == files {
            return Ok(Ok(state.clone()));
        }
    }
    let todo = read_new(&r, parsed, &files);
    let done = parse_all(todo, kinds)?;
    parsed.files.extend(done);
    let result = match recombine_last(parsed, &files) {
        Some(r) => r,
        None => desired::combine(files.iter().map(|k| {
            parsed
                .files
                .get(k)
                .cloned()
                .unwrap_or_else(|| Ok(Vec::new()))
        })),
    };
    let keep: HashSet<&(String, Oid)> = files.iter().collect();
    parsed.files.retain(|k, _| keep.contains(k));
    Ok(match result {
        Ok(state) => {
            let state = Arc::new(state);
            parsed.last = Some((files, state.clone()));
            Ok(state)
        }
        Err(errors) => Err(errors),
    })
}

/// The text of the files not parsed yet.
fn read_new(r: &Repository, parsed: &Parsed, files: &FileSet) -> Vec<Todo> {
    let mut todo: Vec<Todo> = Vec::new();
    for (path, oid) in files {
        let k = (path.clone(), *oid);
        if !parsed.files.contains_key(&k) {
            let text = repo::blob_text(r, *oid);
            todo.push((k, text));
        }
    }
    todo
}

/// Parse the new files (on several threads when there are many: a first pass
/// or a restart parses every file).
fn parse_all(mut todo: Vec<Todo>, kinds: &Kinds) -> Result<Vec<Done>, String> {
    let parse = |(k, text): Todo| {
        let file = match text {
            Ok(text) => desired::parse_file(&k.0, &text, kinds),
            Err(msg) => Err(vec![DesiredError {
                file: k.0.clone(),
                line: 0,
                message: msg,
            }]),
        };
        (k, file)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads > 1 && todo.len() >= PARALLEL_PARSE_MIN_FILES {
        let per = todo.len().div_ceil(threads);
        let mut chunks = Vec::new();
        while todo.len() > per {
            chunks.push(todo.split_off(todo.len() - per));
        }
        chunks.push(todo);
        let done = std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|c| scope.spawn(move || c.into_iter().map(parse).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join())
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|_| "parsing desired-state files panicked".to_string())?;
        Ok(done.into_iter().flatten().collect())
    } else {
        Ok(todo.into_iter().map(parse).collect())
    }
}

/// The state of `files` made from the last good state, when every file parsed
/// and the files that went are still parsed; `None` when everything must be
/// combined afresh.
fn recombine_last(
    parsed: &mut Parsed,
    files: &FileSet,
) -> Option<Result<DesiredState, DesiredErrors>> {
    let ok = files
        .iter()
        .all(|k| parsed.files.get(k).is_some_and(|f| f.is_ok()));
    let resources = |k: &(String, Oid)| -> Option<&[Resource]> {
        match parsed.files.get(k) {
            Some(Ok(rs)) => Some(rs.as_slice()),
            _ => None,
        }
    };
    // From the last good state: drop the files that went, add those that came
    // (when the files that went are still parsed: a broken commit in between
    // evicts them, and then everything is combined afresh).
    if !ok {
        return None;
    }
    let (last_files, last) = parsed.last.take()?;
    let new_set: HashSet<&(String, Oid)> = files.iter().collect();
    let old_set: HashSet<&(String, Oid)> = last_files.iter().collect();
    let removed: Option<Vec<&[Resource]>> = last_files
        .iter()
        .filter(|k| !new_set.contains(k))
        .map(resources)
        .collect();
    let added: Option<Vec<&[Resource]>> = files
        .iter()
        .filter(|k| !old_set.contains(k))
        .map(resources)
        .collect();
    let (removed, added) = (removed?, added?);
    let mut state = Arc::try_unwrap(last).unwrap_or_else(|shared| (*shared).clone());
    desired::recombine(&mut state, removed, added).then_some(Ok(state))
}
