//! Pushing to clients, and THE seam between one node and a cluster: [`Router`](router::Router),
//! chosen once where the shared state is built, answers every question about other nodes
//! (delivery, presence, listings, health, the dashboard's shared samples, lifecycle, session
//! hooks; `control`, server-side subscriptions, kicks and blocks); [`Handle`](handle::Handle) has one method per operation (push, publish, broadcast,
//! push to a session, disconnect, a page of history; the API goes through it too) and builds each message once;
//! [`Handler`](handler::Handler) is the application's callbacks; `presence` is the task that
//! announces channel presence (`join` / `leave`). It may use the registry, the
//! engine, the cluster plumbing, outboxes and the bottom; never sessions, HTTP or the server.

pub(crate) mod channels;
pub(crate) mod control;
pub(crate) mod handle;
pub(crate) mod handler;
pub(crate) mod history;
mod presence;
pub(crate) mod router;
