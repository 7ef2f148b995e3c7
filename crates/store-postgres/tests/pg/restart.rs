//! The server restarts while appends are in flight: each append either
//! fails or is in the chain exactly once, and appends after the restart
//! succeed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use youops_core::audit::{AppendOptions, AuditStore};
use youops_core::model::AuditEvent;

use crate::support::{all_events, cluster, message, notice, open};

const TASKS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_survive_a_server_restart() {
    let cluster = Arc::new(Mutex::new(cluster()));
    let url = cluster.lock().unwrap().create_database();
    let store = open(&url).await;
    let done = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = Arc::clone(&store);
            let (done, restarted) = (Arc::clone(&done), Arc::clone(&restarted));
            tokio::spawn(async move {
                let mut results = Vec::new();
                let mut after_restart = 0;
                for i in 0.. {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    after_restart += usize::from(restarted.load(Ordering::SeqCst));
                    let text = format!("task {t} append {i}");
                    let res = store
                        .append(vec![notice(text.clone())], AppendOptions::durable())
                        .await;
                    results.push((text, res));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                assert!(after_restart > 0, "task {t} appended after the restart");
                results
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || c.lock().unwrap().restart())
        .await
        .unwrap()
        .expect("restart");
    restarted.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    done.store(true, Ordering::SeqCst);

    let mut ok = 0;
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap());
    }
    // After the restart: appends and reads work.
    let after = store
        .append(vec![notice("after the restart")], AppendOptions::durable())
        .await
        .expect("an append after the restart");
    let chain = all_events(&*store).await;
    let count = |text: &str| chain.iter().filter(|e| message(e) == Some(text)).count();
    for (text, res) in &results {
        match res {
            Ok(events) => {
                ok += 1;
                assert_eq!(count(text), 1, "{text} acknowledged: exactly once");
                let stored: Vec<&AuditEvent> =
                    chain.iter().filter(|e| e.seq == events[0].seq).collect();
                assert_eq!(stored, [&events[0]], "{text} as answered");
            }
            Err(e) => {
                assert!(
                    count(text) <= 1,
                    "{text} failed ({e}) and is there more than once"
                );
                eprintln!("{text}: {e}");
            }
        }
    }
    assert!(ok > 0);
    assert_eq!(chain.last(), after.last());
    let v = store.verify().await.unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.checked, chain.len() as u64);
    println!(
        "{ok} of {} appends acknowledged across the restart",
        results.len()
    );
}
