//! Tamper evidence: a changed stored event is named exactly.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use youops_core::audit::{expected_hash, verify_events, AuditStore};
use youops_core::{AuditEvent, EventBody, State};
use youops_store::{LogOptions, LogStore};

use crate::support::*;

// ---------------------------------------------------------------------------
// 1. Tamper evidence
// ---------------------------------------------------------------------------

fn replace_once(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap();
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` must occur exactly once in {text}"
    );
    text.replacen(from, to, 1).into_bytes()
}

/// The segment file holding event `seq`, its lines (one JSON event each) and
/// the event's line.
fn stored_event(store_dir: &Path, seq: u64) -> (PathBuf, Vec<Vec<u8>>, usize) {
    for file in files_under(&store_dir.join("log")) {
        let bytes = std::fs::read(&file).unwrap();
        let lines: Vec<Vec<u8>> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let found = lines
            .iter()
            .position(|l| serde_json::from_slice::<AuditEvent>(l).is_ok_and(|e| e.seq == seq));
        if let Some(index) = found {
            return (file, lines, index);
        }
    }
    panic!("no segment holds event #{seq}");
}

/// Write a segment's lines back (the store is closed).
fn write_lines(file: &Path, lines: &[Vec<u8>]) {
    let mut bytes = lines.join(&b'\n');
    bytes.push(b'\n');
    std::fs::write(file, bytes).unwrap();
}

/// What an auditor finds in a store whose files were changed: the store
/// refuses to open, naming the record, or opens (checking only what it must)
/// and `verify` names it. The seq and reason of the first broken record.
async fn first_broken(path: &Path) -> (u64, String) {
    let mut opts = LogOptions::default();
    opts.verify_on_open = false;
    match LogStore::open(path, opts) {
        Ok(store) => {
            let report = store.verify().await.unwrap();
            let b = report
                .broken
                .clone()
                .unwrap_or_else(|| panic!("tampering went unnoticed: {report:?}"));
            (b.seq, b.reason)
        }
        Err(e) => {
            let text = e.to_string();
            let seq = text
                .split('#')
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("the refusal names no record: {text}"));
            (seq, text)
        }
    }
}

/// Every event of the store's files that decodes, in order, as an export would
/// hold them.
fn segment_events(store_dir: &Path) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    for file in files_under(&store_dir.join("log")) {
        for line in std::fs::read(&file).unwrap().split(|b| *b == b'\n') {
            if let Ok(e) = serde_json::from_slice::<AuditEvent>(line) {
                events.push(e);
            }
        }
    }
    events.sort_by_key(|e| e.seq);
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_one_stored_event_is_named_exactly() {
    let counter = Arc::new(AtomicUsize::new(0));
    let h = start(GREET_OPS, |b| b.builtin("greet", counting(counter.clone()))).await;
    let mut ids = Vec::new();
    for name in ["ann", "ben", "cat"] {
        let t = h
            .exec
            .submit(sub("greet", "alice").arg("who", name))
            .await
            .unwrap();
        let r = done(&h.exec, t.record.request.id).await;
        assert_eq!(r.state, State::Succeeded, "{r:#?}");
        ids.push(t.record.request.id);
    }
    // Stop everything and open the store afresh, as an auditor would.
    let Harness {
        dir: _dir,
        path,
        store,
        exec,
    } = h;
    exec.shutdown(Duration::from_secs(5)).await.unwrap();
    drop(exec);
    drop(store);
    let store = reopen(&path).await;

    let (count, _) = store.head().await.unwrap();
    assert_eq!(count, 9, "three requests of received, running, succeeded");
    let intact = assert_chain_ok(&store).await;
    assert_eq!(intact.checked, count);
    let exported = verify_events(all_events(&store).await);
    assert_eq!(exported, intact);

    let middle = store.request_events(ids[1]).await.unwrap();
    let seqs: Vec<u64> = middle.iter().map(|e| e.seq).collect();
    let labels: Vec<String> = middle.iter().map(|e| e.body.label()).collect();
    assert_eq!(labels, ["received", "running", "succeeded"]);
    let (received, succeeded) = (seqs[0], seqs[2]);

    type Edit = Box<dyn Fn(&[u8]) -> Vec<u8>>;
    struct Tamper {
        name: &'static str,
        seq: u64,
        edit: Edit,
        broken_at: u64,
        reason: &'static str,
        /// `false` when the altered record no longer decodes, so it cannot be exported.
        exportable: bool,
    }
    let rehash: Edit = Box::new(|bytes| {
        // An attacker who also recomputes the record's own hash still breaks
        // the link to the next record.
        let mut ev: AuditEvent = serde_json::from_slice(bytes).unwrap();
        match &mut ev.body {
            EventBody::Received { request } => {
                std::sync::Arc::make_mut(request).op = "grant".into()
            }
            other => panic!("expected a received event, got {other:?}"),
        }
        ev.hash = expected_hash(&ev);
        serde_json::to_vec(&ev).unwrap()
    });
    let table = vec![
        Tamper {
            name: "op renamed, same length",
            seq: received,
            edit: Box::new(|b| replace_once(b, r#""op":"greet""#, r#""op":"grant""#)),
            broken_at: received,
            reason: "altered",
            exportable: true,
        },
        Tamper {
            name: "op renamed, different length",
            seq: received,
            edit: Box::new(|b| replace_once(b, r#""op":"greet""#, r#""op":"drop-database""#)),
            broken_at: received,
            reason: "altered",
            exportable: true,
        },
        Tamper {
            name: "argument changed",
            seq: received,
            edit: Box::new(|b| replace_once(b, r#""who":"ben""#, r#""who":"eve""#)),
            broken_at: received,
            reason: "altered",
            exportable: true,
        },
        Tamper {
            name: "outcome rewritten",
            seq: succeeded,
            edit: Box::new(|b| replace_once(b, r#""to":"succeeded""#, r#""to":"failed""#)),
            broken_at: succeeded,
            reason: "altered",
            exportable: true,
        },
        Tamper {
            name: "altered and re-hashed",
            seq: received,
            edit: rehash,
            broken_at: received + 1,
            reason: "does not match the previous record's hash",
            exportable: true,
        },
        Tamper {
            name: "bytes that do not decode",
            seq: received,
            edit: Box::new(|b| b[..b.len() / 2].to_vec()),
            broken_at: received,
            // The store reads the hashes off a line before it decodes it.
            reason: "does not end with its prev_hash and hash",
            exportable: false,
        },
    ];
    drop(store);
    for t in &table {
        let (file, mut lines, index) = stored_event(&path, t.seq);
        let original = lines.clone();
        let altered = (t.edit)(&lines[index]);
        assert_ne!(altered, lines[index], "{}", t.name);
        lines[index] = altered;
        write_lines(&file, &lines);

        let (seq, reason) = first_broken(&path).await;
        assert_eq!(seq, t.broken_at, "{}: {reason}", t.name);
        assert!(
            reason.contains(t.reason),
            "{}: reason `{reason}` should mention `{}`",
            t.name,
            t.reason
        );
        if t.exportable {
            let offline = verify_events(segment_events(&path));
            assert_eq!(
                offline.broken.map(|b| b.seq),
                Some(t.broken_at),
                "{}: offline verification disagrees",
                t.name
            );
        }
        write_lines(&file, &original);
        let store = reopen(&path).await;
        assert_eq!(assert_chain_ok(&store).await.checked, count, "{}", t.name);
    }

    // A removed record leaves a gap: the store names the missing record, an
    // export's verification the record after it.
    let (file, mut lines, index) = stored_event(&path, received);
    let original = lines.clone();
    lines.remove(index);
    write_lines(&file, &lines);
    let (seq, reason) = first_broken(&path).await;
    assert_eq!(seq, received, "{reason}");
    assert!(reason.contains("missing"), "{reason}");
    let offline = verify_events(segment_events(&path));
    assert_eq!(offline.broken.map(|b| b.seq), Some(received + 1));
    write_lines(&file, &original);
    let store = reopen(&path).await;
    assert_chain_ok(&store).await;
}
