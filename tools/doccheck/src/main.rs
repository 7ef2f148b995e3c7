//! `doccheck [--checkout] [--keep] FILE.md...`: run the pages' shell steps and
//! check them (see the library docs). Exit 0 when every step of every page
//! passed, 1 when one failed, 64 on bad usage or a page that cannot be checked.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use youops_doccheck::parse::{parse, Step};
use youops_doccheck::run::Session;

fn main() -> ExitCode {
    let mut checkout = false;
    let mut keep = false;
    let mut files = Vec::new();
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--checkout" => checkout = true,
            "--keep" => keep = true,
            "-h" | "--help" => {
                println!("usage: doccheck [--checkout] [--keep] FILE.md...");
                return ExitCode::SUCCESS;
            }
            f if f.starts_with('-') => {
                eprintln!("doccheck: unknown option {f}");
                return ExitCode::from(64);
            }
            f => files.push(PathBuf::from(f)),
        }
    }
    if files.is_empty() {
        eprintln!("usage: doccheck [--checkout] [--keep] FILE.md...");
        return ExitCode::from(64);
    }
    match check(&files, checkout, keep) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => ExitCode::from(code),
    }
}

fn check(files: &[PathBuf], checkout: bool, keep: bool) -> Result<(), u8> {
    let root = std::env::current_dir().map_err(|e| {
        eprintln!("doccheck: {e}");
        64
    })?;
    let mut pages = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| {
            eprintln!("doccheck: {}: {e}", f.display());
            64
        })?;
        match parse(&text) {
            Ok(steps) => pages.push((f, steps)),
            Err(errors) => {
                for e in errors {
                    eprintln!("{}:{e}", f.display());
                }
                return Err(64);
            }
        }
    }
    let scratch = tempfile::Builder::new()
        .prefix("doccheck.")
        .tempdir()
        .map_err(|e| {
            eprintln!("doccheck: temp dir: {e}");
            64
        })?;
    let dir = if checkout {
        let dir = scratch.path().join("checkout");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        youops_doccheck::checkout(&root, &dir, &target).map_err(|e| {
            eprintln!("doccheck: {e}");
            64
        })?;
        println!(
            "doccheck: a clean copy of the tracked files in {}",
            dir.display()
        );
        dir
    } else {
        root.clone()
    };
    let result = pages
        .iter()
        .try_for_each(|(f, steps)| page(f, steps, &dir, scratch.path()));
    if keep || result.is_err() {
        println!("doccheck: kept {}", scratch.keep().display());
    }
    result
}

fn page(file: &Path, steps: &[Step], dir: &Path, scratch: &Path) -> Result<(), u8> {
    let state = scratch.join(file.to_string_lossy().replace('/', "_"));
    std::fs::create_dir_all(&state).map_err(|_| 64u8)?;
    let mut session = Session::new(dir, &state).map_err(|e| {
        eprintln!("doccheck: {e}");
        64u8
    })?;
    let (mut ran, mut skipped) = (0, 0);
    for step in steps {
        let (line, what) = match step {
            Step::Command { line, text, .. } => (*line, format!("$ {}", first_line(text))),
            Step::Signal { line, checks } => (
                *line,
                format!("signal {}", checks.signal.as_deref().unwrap_or("?")),
            ),
        };
        match session.step(step) {
            Ok(Some(note)) => {
                ran += 1;
                println!("{}:{line}: {what} … ok, {note}", file.display());
            }
            Ok(None) => {
                skipped += 1;
                println!("{}:{line}: {what} … skipped", file.display());
            }
            Err(f) => {
                eprintln!(
                    "{}:{}: {what} … FAILED: {}",
                    file.display(),
                    f.line,
                    f.message
                );
                return Err(1);
            }
        }
    }
    if ran == 0 {
        println!("{}: no steps run ({skipped} skipped)", file.display());
    } else {
        println!(
            "{}: {ran} passed, 0 failed, {skipped} skipped",
            file.display()
        );
    }
    Ok(())
}

fn first_line(text: &str) -> &str {
    text.lines()
        .next()
        .unwrap_or("")
        .trim()
        .trim_end_matches('\\')
        .trim_end()
}
