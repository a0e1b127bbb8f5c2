//! An id given on the command line may name a chat or a chat group: try the chat first
//! (`GET /v0/evi/chats/{id}`), and on 404 the group (`GET /v0/evi/chat_groups/{id}/events`).

use colloquy_client::{Client, ClientError, PageRequest};
use colloquy_wire::{ReturnChatEvent, ReturnChatGroupPagedEvents, ReturnChatPagedEvents};
use futures::TryStreamExt;

/// A chat or a chat group, with the first page of its events already fetched.
pub enum Target {
    /// A chat.
    Chat(ReturnChatPagedEvents),
    /// A chat group and the start of its first chat (epoch ms).
    Group {
        first: ReturnChatGroupPagedEvents,
        start_timestamp: i64,
        end_timestamp: Option<i64>,
    },
}

impl Target {
    /// Looks `id` up as a chat, then as a chat group.
    pub async fn resolve(client: &Client, id: &str) -> anyhow::Result<Target> {
        match client
            .chat_events_page(id, PageRequest::full(0, true))
            .await
        {
            Ok(chat) => return Ok(Target::Chat(chat)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let first = match client
            .chat_group_events_page(id, PageRequest::full(0, true))
            .await
        {
            Ok(first) => first,
            Err(e) if e.is_not_found() => {
                anyhow::bail!("no chat or chat group with id {id} (404)")
            }
            Err(e) => return Err(e.into()),
        };
        // The group's header: when its first chat started, and its last chat's end.
        let header = client
            .chat_group_page(
                id,
                None,
                PageRequest {
                    number: 0,
                    size: 1,
                    ascending: false,
                },
            )
            .await?;
        let end_timestamp = header.chats_page.first().and_then(|c| c.end_timestamp);
        Ok(Target::Group {
            first,
            start_timestamp: header.first_start_timestamp,
            end_timestamp,
        })
    }

    /// `chat` or `chat group`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Chat(_) => "chat",
            Target::Group { .. } => "chat group",
        }
    }

    /// The chat's or group's id.
    pub fn id(&self) -> &str {
        match self {
            Target::Chat(c) => &c.id,
            Target::Group { first, .. } => &first.id,
        }
    }

    /// When the chat (or the group's first chat) started, epoch ms: offsets count from here.
    pub fn start_timestamp(&self) -> i64 {
        match self {
            Target::Chat(c) => c.start_timestamp,
            Target::Group {
                start_timestamp, ..
            } => *start_timestamp,
        }
    }

    /// When the chat (or the group's last chat) ended, if it has.
    pub fn end_timestamp(&self) -> Option<i64> {
        match self {
            Target::Chat(c) => c.end_timestamp,
            Target::Group { end_timestamp, .. } => *end_timestamp,
        }
    }

    /// Every event, in order, paging to exhaustion.
    pub async fn events(self, client: &Client) -> Result<Vec<ReturnChatEvent>, ClientError> {
        match self {
            Target::Chat(first) => {
                let id = first.id.clone();
                client.chat_events(&id, Some(first)).try_collect().await
            }
            Target::Group { first, .. } => {
                let id = first.id.clone();
                client
                    .chat_group_events(&id, Some(first))
                    .try_collect()
                    .await
            }
        }
    }
}
