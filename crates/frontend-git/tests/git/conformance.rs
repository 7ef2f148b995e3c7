//! The core frontend conformance suite, driven through the git frontend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use git2::{Oid, Repository};
use youops_core::frontend::conformance::{run_suite, Driver};
use youops_core::frontend::{Frontend, FrontendHost};
use youops_core::{RequestId, State};
use youops_frontend_git::state::note_request_states;
use youops_frontend_git::{GitFrontend, NOTES_REF};

use crate::support::*;

struct GitDriver {
    dir: tempfile::TempDir,
    commits: Mutex<HashMap<String, Oid>>,
}

const DRIVER_TOKEN: &str = "conformance-token";

impl GitDriver {
    fn new() -> GitDriver {
        let dir = tempfile::tempdir().unwrap();
        let repo = init_repo(&dir.path().join("repo"));
        commit(
            &repo,
            &[("README.md", Some("conformance\n"))],
            "initial",
            "tester@example.com",
        );
        GitDriver {
            dir,
            commits: Mutex::new(HashMap::new()),
        }
    }

    fn section(&self) -> String {
        format!(
            "repo = \"{}\"\nstate_dir = \"{}\"\ninterval = \"1h\"\nwebhook_token = \"{DRIVER_TOKEN}\"\n",
            self.dir.path().join("repo").display(),
            self.dir.path().join("gitstate").display()
        )
    }
}

#[async_trait]
impl Driver for GitDriver {
    fn frontend(&self) -> Arc<dyn Frontend> {
        let section: toml::Table = toml::from_str(&self.section()).unwrap();
        Arc::new(GitFrontend::from_config(&section, &[], self.dir.path()).unwrap())
    }

    fn user_id(&self) -> String {
        "tester@example.com".into()
    }

    fn config_section(&self) -> String {
        self.section()
    }

    async fn deliver(
        &self,
        host: &FrontendHost,
        command: &str,
        delivery: &str,
    ) -> Result<(), String> {
        let known = self.commits.lock().unwrap().get(delivery).copied();
        if known.is_none() {
            let repo = Repository::open(self.dir.path().join("repo")).map_err(|e| e.to_string())?;
            let oid = commit(
                &repo,
                &[("deliveries.txt", Some(delivery))],
                &format!("delivery {delivery}\n\nYouops-Run: {command}\n"),
                "tester@example.com",
            );
            self.commits
                .lock()
                .unwrap()
                .insert(delivery.to_string(), oid);
        }
        let (_, index) = host
            .routes()
            .into_iter()
            .find(|(r, _)| r.path == "/git/webhook")
            .ok_or("no webhook route")?;
        let r = host
            .handle(
                index,
                webhook_request(&[("authorization", format!("Bearer {DRIVER_TOKEN}"))], b""),
            )
            .await;
        if r.status() != 202 {
            return Err(format!("webhook answered {}", r.status()));
        }
        Ok(())
    }

    async fn rendered(&self, id: RequestId) -> Vec<State> {
        let Ok(repo) = Repository::open(self.dir.path().join("repo")) else {
            return Vec::new();
        };
        let Ok(notes) = repo.notes(Some(NOTES_REF)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for n in notes.flatten() {
            if let Ok(note) = repo.find_note(Some(NOTES_REF), n.1) {
                for (rid, state) in note_request_states(note.message().unwrap_or("")) {
                    if rid == id.to_string() {
                        if let Ok(s) = state.parse() {
                            out.push(s);
                        }
                    }
                }
            }
        }
        out
    }
}

#[tokio::test]
async fn conformance_suite() {
    let driver = GitDriver::new();
    let report = run_suite(&driver).await.unwrap();
    assert_eq!(report.record.state, State::Succeeded);
    assert_eq!(report.rendered, vec![State::Succeeded]);
    let commit = driver.commits.lock().unwrap()["conformance-1"];
    assert_eq!(
        report.record.request.dedup_key.as_deref(),
        Some(format!("git:{commit}:run:0").as_str())
    );
}
