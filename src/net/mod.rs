//! What a connection is and costs below HTTP: the WebSocket on a TCP socket (tungstenite driven
//! by hand), TLS, permessage-deflate, the descriptor budget every socket draws on, and the
//! admission slots and per-address limits a session holds, and the blocked client ids the
//! handshake refuses. Nothing here knows about sessions,
//! the registry or the server; it may use only the crate's bottom (and nothing at all today).

pub(crate) mod admission;
pub(crate) mod blocks;
pub(crate) mod budget;
pub(crate) mod deflate;
pub(crate) mod socket;
pub(crate) mod tls;
