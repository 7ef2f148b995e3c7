//! Request `j` of each front door, as the daemon's frontends receive them:
//! API calls, signed Slack slash commands, signed GitHub `issue_comment`
//! webhooks, and the git webhook.

use serde_json::{json, Value};

use super::ctx::Ctx;
use super::doors::Door;
use super::fake_github::{gh_now, GH_REPO};
use super::wire::{form, hmac_sha256};

impl Ctx {
    /// Request `j` of `door`.
    pub(crate) fn request(
        &self,
        client: &reqwest::Client,
        door: Door,
        j: u64,
    ) -> reqwest::RequestBuilder {
        match door {
            Door::Api => self.api_request(client, j),
            Door::Slack => self.slack_request(client, j),
            Door::Github => self.github_request(client, j),
            Door::Git => client
                .post(format!("{}/git/webhook", self.base))
                .bearer_auth(&self.args.git_token),
        }
    }

    /// `POST /api/v1/requests` with the token of user `j`.
    fn api_request(&self, client: &reqwest::Client, j: u64) -> reqwest::RequestBuilder {
        let (op, args) = self.op_for(Door::Api, j);
        let args: serde_json::Map<String, Value> = args
            .into_iter()
            .map(|(k, v)| {
                let v = v.parse::<i64>().map_or(Value::String(v), Value::from);
                (k, v)
            })
            .collect();
        client
            .post(format!("{}/api/v1/requests", self.base))
            .bearer_auth(format!("{}-{}", self.args.token, self.user(j)))
            .json(&json!({ "op": op, "args": args }))
    }

    /// A signed slash command (`/ops …`) with a unique `trigger_id`.
    fn slack_request(&self, client: &reqwest::Client, j: u64) -> reqwest::RequestBuilder {
        let u = self.user(j);
        let channel = format!("CSOAK{:03}", j % self.args.channels.max(1) as u64);
        let trigger = format!("{j}.{}.soak", self.run);
        let body = form(&[
            ("token", "soak-verification-token"),
            ("team_id", "T0SOAK"),
            ("team_domain", "soak"),
            ("channel_id", &channel),
            ("channel_name", "ops"),
            ("user_id", &format!("USOAK{u}")),
            ("user_name", &format!("soak{u}")),
            ("command", "/ops"),
            ("text", &self.command_text(Door::Slack, j)),
            ("api_app_id", "A0SOAK"),
            ("is_enterprise_install", "false"),
            (
                "response_url",
                &format!("{}/respond/{trigger}", self.slack_base),
            ),
            ("trigger_id", &trigger),
        ]);
        let ts = chrono::Utc::now().timestamp().to_string();
        let mac = hmac_sha256(
            self.args.slack_secret.as_bytes(),
            &[b"v0:", ts.as_bytes(), b":", body.as_bytes()],
        );
        client
            .post(format!("{}/slack/commands", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("user-agent", "Slackbot 1.0 (+https://api.slack.com/robots)")
            .header("x-slack-request-timestamp", ts)
            .header("x-slack-signature", format!("v0={}", hex::encode(mac)))
            .body(body)
    }

    /// A signed `issue_comment` webhook with a unique delivery and comment id.
    fn github_request(&self, client: &reqwest::Client, j: u64) -> reqwest::RequestBuilder {
        let issue = 1 + j / self.args.comments_per_issue.max(1);
        let comment_id = 50_000_000 + j;
        let login = format!("soak-user-{}", self.user(j));
        let t = gh_now();
        let user = json!({ "login": login, "id": 1000 + self.user(j), "type": "User" });
        let payload = json!({
            "action": "created",
            "issue": {
                "number": issue, "title": "soak requests", "body": "", "user": user,
                "labels": [], "state": "open",
                "html_url": format!("https://github.com/{GH_REPO}/issues/{issue}"),
                "created_at": t, "updated_at": t
            },
            "comment": {
                "id": comment_id,
                "body": format!("/ops {}", self.command_text(Door::Github, j)),
                "user": user,
                "html_url": format!("https://github.com/{GH_REPO}/issues/{issue}#issuecomment-{comment_id}"),
                "issue_url": format!("https://api.github.com/repos/{GH_REPO}/issues/{issue}"),
                "created_at": t, "updated_at": t
            },
            "repository": { "full_name": GH_REPO, "name": "soak", "owner": { "login": "acme" } },
            "sender": user
        });
        let body = payload.to_string();
        let mac = hmac_sha256(self.args.github_secret.as_bytes(), &[body.as_bytes()]);
        client
            .post(format!("{}/github/webhook", self.base))
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/soak")
            .header("x-github-event", "issue_comment")
            .header("x-github-delivery", format!("{}-{j}", self.run))
            .header(
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(mac)),
            )
            .body(body)
    }
}
