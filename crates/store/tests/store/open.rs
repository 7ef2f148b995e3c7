//! One writer (section 6) and an old sled store (section 10): what opening
//! refuses.

use std::time::Duration;

use youops_core::audit::{AppendOptions, AuditStore, StoreError};
use youops_store::{LogOptions, LogStore};

use crate::support::{notice, open};
// -------------------------------------------------------------- 6. one writer

#[tokio::test]
async fn a_second_open_is_refused_while_the_first_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = open(&path, LogOptions::default());
    match LogStore::open(&path, LogOptions::default()) {
        Err(e @ StoreError::Locked(_)) => {
            assert!(matches!(&e, StoreError::Locked(p) if p == &path.display().to_string()));
            assert!(e.to_string().contains("locked by another process"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    drop(store);
    open(&path, LogOptions::default());
}

// ------------------------------------------------------- 10. an old sled store

#[tokio::test]
async fn a_sled_store_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let sled = youops_store_sled::SledStore::open(&path).unwrap();
        sled.append(vec![notice("in sled")], AppendOptions::durable())
            .await
            .unwrap();
    }
    // sled's IO threads hold its lock (an flock of `db`) a moment after its
    // last handle goes: wait until it is closed for good.
    let db = std::fs::File::open(path.join("db")).unwrap();
    for _ in 0..750 {
        if db.try_lock().is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(db);
    let before: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    match LogStore::open(&path, LogOptions::default()) {
        Err(StoreError::Io(m)) => {
            assert!(m.contains("sled") && m.contains("youops store copy"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let after: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(before, after, "nothing was created in the sled directory");
}
