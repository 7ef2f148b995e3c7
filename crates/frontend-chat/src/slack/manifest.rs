//! `youops gen slack-manifest`: a Slack app manifest for this configuration.

/// A Slack app manifest (JSON, per Slack's app manifest schema) with the slash
/// command, bot scopes, the `app_mention` event subscription and interactivity,
/// pointing at `public_url` (or with Socket Mode enabled when the section says
/// `transport = "socket"`). Paste it at api.slack.com/apps → Create New App →
/// From an app manifest.
pub fn manifest(public_url: &str, section: &toml::Table) -> String {
    let base = public_url.trim_end_matches('/');
    let get = |k: &str| section.get(k).and_then(|v| v.as_str());
    let command = get("command").unwrap_or("/ops");
    let name = get("bot_name").unwrap_or("YouOps");
    let socket = get("transport") == Some("socket");
    let mut slash = serde_json::json!({
        "command": command,
        "description": "Run a YouOps operation, or ask for help",
        "usage_hint": "OP [name=value ...] [--dry-run] | help [OP] | status ID | approve ID | deny ID [reason]",
        "should_escape": false
    });
    let mut events = serde_json::json!({ "bot_events": ["app_mention"] });
    let mut interactivity = serde_json::json!({ "is_enabled": true });
    if !socket {
        slash["url"] = format!("{base}{}", crate::slack::COMMANDS_PATH).into();
        events["request_url"] = format!("{base}{}", crate::slack::EVENTS_PATH).into();
        interactivity["request_url"] = format!("{base}{}", crate::slack::INTERACTIONS_PATH).into();
    }
    let display: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(80)
        .collect();
    let m = serde_json::json!({
        "_metadata": { "major_version": 1, "minor_version": 1 },
        "display_information": {
            "name": name,
            "description": "Run declared operations from Slack, with approvals and an audit trail",
            "background_color": "#1d3557"
        },
        "features": {
            "bot_user": { "display_name": display, "always_online": true },
            "slash_commands": [slash]
        },
        "oauth_config": {
            "scopes": { "bot": ["app_mentions:read", "chat:write", "commands"] }
        },
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": false,
            "socket_mode_enabled": socket,
            "token_rotation_enabled": false
        }
    });
    serde_json::to_string_pretty(&m).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_manifest_points_at_the_public_url() {
        let t: toml::Table = "command = \"/deploy\"".parse().unwrap();
        let m: serde_json::Value =
            serde_json::from_str(&manifest("https://ops.example.com/", &t)).unwrap();
        assert_eq!(m["features"]["slash_commands"][0]["command"], "/deploy");
        assert_eq!(
            m["features"]["slash_commands"][0]["url"],
            "https://ops.example.com/slack/commands"
        );
        assert_eq!(
            m["settings"]["event_subscriptions"]["request_url"],
            "https://ops.example.com/slack/events"
        );
        assert_eq!(
            m["settings"]["event_subscriptions"]["bot_events"][0],
            "app_mention"
        );
        assert_eq!(
            m["settings"]["interactivity"]["request_url"],
            "https://ops.example.com/slack/interactions"
        );
        assert_eq!(m["settings"]["socket_mode_enabled"], false);
        let scopes = m["oauth_config"]["scopes"]["bot"].as_array().unwrap();
        for s in ["commands", "chat:write", "app_mentions:read"] {
            assert!(scopes.iter().any(|v| v == s), "{s}");
        }
    }

    #[test]
    fn socket_manifest_has_no_urls() {
        let t: toml::Table = "transport = \"socket\"".parse().unwrap();
        let text = manifest("https://unused", &t);
        assert!(!text.contains("https://unused"));
        let m: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(m["settings"]["socket_mode_enabled"], true);
    }
}
