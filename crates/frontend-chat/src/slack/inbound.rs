//! Slack's inbound payloads (`slack-morphism` types: slash command forms,
//! `app_mention` events, `block_actions` interactions) turned into the chat
//! logic's [`Inbound`] / [`Action`].

use slack_morphism::prelude::*;

use crate::chat::adapter::{ActionKind, MessageRef};
use crate::chat::{Action, Inbound, InboundKind};
use crate::slack::signature::form_field;
use crate::ChatFrontendError;

/// Build the `slack-morphism` slash command model from a form body; `Err`
/// ([`ChatFrontendError::MissingField`]) names the first missing required field.
pub fn command_event_from_form(
    form: &[(String, String)],
) -> Result<SlackCommandEvent, ChatFrontendError> {
    let mut map = serde_json::Map::new();
    for key in [
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "command",
        "text",
        "response_url",
        "trigger_id",
    ] {
        if let Some(v) = form_field(form, key) {
            map.insert(key.into(), serde_json::Value::String(v.to_string()));
        }
    }
    for key in [
        "team_id",
        "channel_id",
        "user_id",
        "command",
        "response_url",
        "trigger_id",
    ] {
        if !map.contains_key(key) {
            return Err(ChatFrontendError::MissingField(key));
        }
    }
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|_| ChatFrontendError::MissingField("response_url"))
}

/// Undo Slack's `&amp;` `&lt;` `&gt;` escaping of message text.
pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Strip leading `<@U...>` mentions (the bot's own) from a message.
pub fn strip_mentions(text: &str) -> &str {
    let mut t = text.trim_start();
    while let Some(rest) = t.strip_prefix("<@") {
        match rest.find('>') {
            Some(end) => t = rest[end + 1..].trim_start(),
            None => break,
        }
    }
    t
}

/// A slash command as an [`Inbound`]. Slack never redelivers a slash command,
/// but every invocation carries a unique `trigger_id`, which is the dedup key: a
/// replayed request (same bytes within the signature window) runs nothing twice.
pub fn command_inbound(ev: &SlackCommandEvent) -> Inbound {
    Inbound {
        user: ev.user_id.0.clone(),
        team: Some(ev.team_id.0.clone()),
        channel: ev.channel_id.0.clone(),
        text: unescape(ev.text.as_deref().unwrap_or("")),
        delivery: format!("slack:command:{}:{}", ev.team_id.0, ev.trigger_id.0),
        retry: None,
        kind: InboundKind::Command {
            command: ev.command.0.clone(),
            response_url: Some(ev.response_url.0.to_string()),
        },
    }
}

/// An `app_mention` event as an [`Inbound`]; the event id is the dedup key.
pub fn mention_inbound(cb: &SlackPushEventCallback, retry: Option<String>) -> Option<Inbound> {
    let SlackEventCallbackBody::AppMention(m) = &cb.event else {
        return None;
    };
    let text = m.content.text.as_deref().unwrap_or("");
    Some(Inbound {
        user: m.user.0.clone(),
        team: Some(cb.team_id.0.clone()),
        channel: m.channel.0.clone(),
        text: unescape(strip_mentions(text)),
        delivery: format!("slack:event:{}", cb.event_id.0),
        retry,
        kind: InboundKind::Mention {
            ts: m.origin.ts.0.clone(),
            thread_ts: m.origin.thread_ts.as_ref().map(|t| t.0.clone()),
        },
    })
}

/// Our Approve/Deny clicks in a `block_actions` interaction.
pub fn actions_from(ev: &SlackInteractionEvent) -> Vec<Action> {
    let SlackInteractionEvent::BlockActions(b) = ev else {
        return Vec::new();
    };
    let Some(user) = &b.user else {
        return Vec::new();
    };
    let message = match &b.container {
        SlackInteractionActionContainer::Message(m) => m
            .channel_id
            .as_ref()
            .or(b.channel.as_ref().map(|c| &c.id))
            .map(|ch| MessageRef {
                channel: ch.0.clone(),
                id: m.message_ts.0.clone(),
            }),
        _ => None,
    };
    let thread = b
        .message
        .as_ref()
        .and_then(|m| m.origin.thread_ts.as_ref())
        .map(|t| t.0.clone());
    b.actions
        .iter()
        .flatten()
        .filter_map(|a| {
            let kind = ActionKind::from_action_id(&a.action_id.0)?;
            Some(Action {
                kind,
                value: a.value.clone().unwrap_or_default(),
                user: user.id.0.clone(),
                message: message.clone(),
                thread: thread.clone(),
                response_url: b.response_url.as_ref().map(|u| u.0.to_string()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slack::signature::{self, parse_form};

    #[test]
    fn mentions_are_stripped_and_text_unescaped() {
        assert_eq!(
            strip_mentions("<@U0BOT> deploy env=prod"),
            "deploy env=prod"
        );
        assert_eq!(strip_mentions("  <@U0BOT>  <@U1>help"), "help");
        assert_eq!(strip_mentions("<@U0BOT"), "<@U0BOT");
        assert_eq!(unescape("a &lt;b&gt; &amp;amp;"), "a <b> &amp;");
    }

    #[test]
    fn a_slash_command_form_becomes_an_inbound_with_trigger_id_dedup() {
        let body = signature::encode_form(&[
            ("token", "legacy"),
            ("team_id", "T1"),
            ("team_domain", "acme"),
            ("channel_id", "C1"),
            ("channel_name", "ops"),
            ("user_id", "U1"),
            ("user_name", "alice"),
            ("command", "/ops"),
            ("text", "deploy env=prod"),
            ("api_app_id", "A1"),
            ("is_enterprise_install", "false"),
            ("response_url", "https://hooks.slack.com/commands/T1/1/abc"),
            ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
        ]);
        let ev = command_event_from_form(&parse_form(body.as_bytes())).unwrap();
        let inb = command_inbound(&ev);
        assert_eq!(inb.text, "deploy env=prod");
        assert_eq!(
            inb.delivery,
            "slack:command:T1:13345224609.738474920.8088930838d88f008e0"
        );
        let err = command_event_from_form(&parse_form(b"team_id=T1")).unwrap_err();
        assert!(matches!(err, ChatFrontendError::MissingField("channel_id")));
        assert_eq!(err.to_string(), "slash command payload lacks `channel_id`");
    }
}
