//! Pushing to clients from code: [`Handle`](handle::Handle) (push, publish, broadcast,
//! disconnect; the API goes through it too) and [`Handler`](handler::Handler), the application's
//! callbacks. This is where the seam between one node and a cluster is meant to sit: everything
//! above asks a `Handle`, which alone knows whether a cluster runs. It may use the registry,
//! the engine, the cluster plumbing, outboxes and the bottom; never sessions, HTTP or the server.

pub(crate) mod handle;
pub(crate) mod handler;
