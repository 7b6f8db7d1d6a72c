//! Channels as the embedding application, the API and the client `presence` command see them
//! (docs/protocol.md §14): who is on a channel and which channels have subscribers, on every
//! node of a cluster.

use super::handle::Handle;
use crate::engine::EngineError;
use crate::protocol::json_str;

/// Client ids a presence answer lists by default (the API's `limit`, the `presence` command).
pub const CLIENTS_DEFAULT: usize = 1000;
/// Channels a listing page holds at most, and by default.
pub const CHANNELS_MAX: usize = 1000;
/// Client ids one presence page lists at most (the API's `?limit=`).
pub use crate::registry::presence::PAGE_MAX as CLIENTS_MAX;

/// A channel's presence on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPresence {
    /// The channel.
    pub channel: String,
    /// Subscriber sessions on every node.
    pub sessions: u64,
    /// Client ids (sorted, one page) and their sessions on the channel.
    pub clients: Vec<(String, u64)>,
    /// Some node did not answer in time: the counts are short.
    pub partial: bool,
}

impl ChannelPresence {
    /// The JSON object the API and the `presence` command answer:
    /// `{"channel","sessions","clients":[{"client_id","sessions"}]}`, plus `"partial":true`
    /// when a node did not answer.
    pub fn to_json(&self) -> String {
        let mut out = format!(
            "{{\"channel\":{},\"sessions\":{},\"clients\":[",
            json_str(&self.channel),
            self.sessions
        );
        for (i, (client, n)) in self.clients.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!(
                "{{\"client_id\":{},\"sessions\":{n}}}",
                json_str(client)
            ));
        }
        out.push(']');
        if self.partial {
            out.push_str(",\"partial\":true");
        }
        out.push('}');
        out
    }
}

/// One page of the channels with subscribers, on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPage {
    /// Channel names (sorted) and their subscriber sessions.
    pub channels: Vec<(String, u64)>,
    /// Some node did not answer in time.
    pub partial: bool,
}

impl ChannelPage {
    /// The JSON array the API answers: `[{"channel","sessions"}]`.
    pub fn to_json(&self) -> String {
        let mut out = String::from("[");
        for (i, (ch, n)) in self.channels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!(
                "{{\"channel\":{},\"sessions\":{n}}}",
                json_str(ch)
            ));
        }
        out.push(']');
        out
    }
}

impl Handle {
    /// Who is on `channel` on every node: its subscriber sessions and the first
    /// [`CLIENTS_DEFAULT`] client ids by name, with their sessions.
    pub async fn channel_presence(&self, channel: &str) -> Result<ChannelPresence, EngineError> {
        self.channel_presence_page(channel, None, CLIENTS_DEFAULT)
            .await
    }

    /// [`Handle::channel_presence`], one page: client ids after `after`, at most `limit`
    /// (1 to [`CLIENTS_MAX`]).
    pub async fn channel_presence_page(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ChannelPresence, EngineError> {
        let router = self.router();
        router.registry().metrics.presence_query();
        let limit = limit.clamp(1, CLIENTS_MAX);
        let (sessions, clients, partial) = router.channel_clients(channel, after, limit).await?;
        Ok(ChannelPresence {
            channel: channel.to_string(),
            sessions,
            clients: clients
                .into_iter()
                .map(|(c, n)| (c.to_string(), n))
                .collect(),
            partial,
        })
    }

    /// The channels with subscribers on every node whose names start with `prefix`, sorted,
    /// after `after` (the last name of the previous page), at most `limit` (1 to
    /// [`CHANNELS_MAX`]), with their subscriber sessions.
    pub async fn channels(
        &self,
        prefix: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<ChannelPage, EngineError> {
        let limit = limit.clamp(1, CHANNELS_MAX);
        let (page, partial) = self.router().channel_page(prefix, after, limit).await?;
        Ok(ChannelPage {
            channels: page.into_iter().map(|(c, n)| (c.to_string(), n)).collect(),
            partial,
        })
    }
}
