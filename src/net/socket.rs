//! A WebSocket over a plain TCP socket, driven straight from the session's poll loop.
//!
//! tokio-tungstenite adapts a socket for tungstenite with two reference-counted waker proxies
//! per connection. On plain TCP the socket's own non-blocking `try_read` / `try_write` do the
//! job: tungstenite sees an ordinary `Read + Write`, and readiness is registered only for the
//! direction that would block. TLS and other streams keep using tokio-tungstenite.
//!
//! A session that negotiated permessage-deflate reads through [`crate::net::deflate::Inflater`]
//! (`TcpWs<Box<Inflater>>`); the others through `()`, which costs their future nothing.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, WebSocket};

use crate::net::deflate::Inflater;

/// What stands between the socket and tungstenite on the way in.
pub trait Inbound: Send + Unpin + 'static {
    /// One read for tungstenite, from what `raw` reads off the socket.
    fn read(
        &mut self,
        buf: &mut [u8],
        raw: impl FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize>;

    /// What tungstenite should see of the bytes read past the HTTP request.
    fn filter_vec(&mut self, part: Vec<u8>) -> Vec<u8>;
}

/// No extension: bytes go to tungstenite as read.
impl Inbound for () {
    fn read(
        &mut self,
        buf: &mut [u8],
        mut raw: impl FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        raw(buf)
    }

    fn filter_vec(&mut self, part: Vec<u8>) -> Vec<u8> {
        part
    }
}

/// permessage-deflate: compressed messages are inflated before tungstenite sees them.
impl Inbound for Box<Inflater> {
    fn read(
        &mut self,
        buf: &mut [u8],
        raw: impl FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        Inflater::read(self, buf, raw)
    }

    fn filter_vec(&mut self, part: Vec<u8>) -> Vec<u8> {
        Inflater::filter_vec(self, part)
    }
}

/// Outgoing bytes gathered before a write to the socket.
const GATHER: usize = 4096;

/// The TCP socket as tungstenite sees it, remembering which direction would block.
///
/// It gathers outgoing bytes itself (tungstenite's own buffer is set to write through, see
/// [`TcpWs::with_inbound`]): tungstenite's buffer keeps the largest capacity it ever reached, so
/// one burst of frames left every session that got one holding up to 8 KiB for good, while this
/// one is given back each time a flush empties it.
struct TcpIo<I> {
    /// The connection.
    tcp: TcpStream,
    /// The last read returned `WouldBlock`.
    read_blocked: bool,
    /// The last write returned `WouldBlock`.
    write_blocked: bool,
    /// A message was queued while the socket took no more: flush before accepting another
    /// (kept here, beside the other flags, for the size of the session's future).
    sink_blocked: bool,
    /// A message is being handed over (`start_send`): its bytes are gathered. Every other write
    /// (tungstenite's pongs and close replies, the close it sends when the connection ends)
    /// goes to the socket at once, as tungstenite expects, after whatever was gathered.
    gathering: bool,
    /// The inbound layer.
    inbound: I,
    /// Bytes accepted from tungstenite and not yet written (at most about [`GATHER`]); boxed so
    /// an idle session pays one pointer for it.
    out: Option<Box<Gathered>>,
}

/// The bytes a [`TcpIo`] gathered (a struct, so the box holds the vector's three words).
#[derive(Default)]
struct Gathered(Vec<u8>);

impl<I> TcpIo<I> {
    /// Writes what is gathered; `WouldBlock` (remembered) while the socket takes no more.
    fn write_out(&mut self) -> io::Result<()> {
        let Some(out) = self.out.as_mut().map(|g| &mut g.0) else {
            return Ok(());
        };
        while !out.is_empty() {
            match self.tcp.try_write(out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    out.drain(..n);
                }
                Err(e) => {
                    self.write_blocked |= e.kind() == io::ErrorKind::WouldBlock;
                    return Err(e);
                }
            }
        }
        // Idle sessions keep no write buffer.
        self.out = None;
        Ok(())
    }

    /// Bytes gathered and not yet written.
    fn gathered(&self) -> usize {
        self.out.as_ref().map_or(0, |g| g.0.len())
    }
}

impl<I: Inbound> Read for TcpIo<I> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (tcp, blocked) = (&self.tcp, &mut self.read_blocked);
        self.inbound.read(buf, |b| {
            let r = tcp.try_read(b);
            *blocked |= matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
            r
        })
    }
}

impl<I> Write for TcpIo<I> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.gathering || self.gathered() + buf.len() > GATHER {
            self.write_out()?;
        }
        if !self.gathering || buf.len() >= GATHER {
            let r = self.tcp.try_write(buf);
            self.write_blocked |= matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
            return r;
        }
        self.out.get_or_insert_default().0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()
    }
}

/// A server-side WebSocket on a TCP socket; a `Stream` of messages and a `Sink` for them.
pub struct TcpWs<I = ()> {
    /// tungstenite's protocol state and buffers.
    ws: WebSocket<TcpIo<I>>,
}

impl TcpWs {
    /// Wraps an upgraded socket; `part` holds bytes already read past the HTTP request.
    pub fn new(tcp: TcpStream, part: Option<Vec<u8>>, config: WebSocketConfig) -> TcpWs {
        TcpWs::with_inbound(tcp, part, config, ())
    }
}

impl<I: Inbound> TcpWs<I> {
    /// [`TcpWs::new`] reading through `inbound`.
    pub fn with_inbound(
        tcp: TcpStream,
        part: Option<Vec<u8>>,
        config: WebSocketConfig,
        mut inbound: I,
    ) -> TcpWs<I> {
        let part = part
            .map(|p| inbound.filter_vec(p))
            .filter(|p| !p.is_empty());
        let io = TcpIo {
            tcp,
            read_blocked: false,
            write_blocked: false,
            sink_blocked: false,
            gathering: false,
            inbound,
            out: None,
        };
        // Every frame goes straight to `TcpIo`, which gathers the bytes (see there).
        let config = config.write_buffer_size(0);
        let ws = match part {
            None => WebSocket::from_raw_socket(io, Role::Server, Some(config)),
            Some(p) => WebSocket::from_partially_read(io, p, Role::Server, Some(config)),
        };
        TcpWs { ws }
    }

    /// Runs `op` until it stops returning `WouldBlock` for a direction that is ready again;
    /// when it would block, the task is registered for that direction's readiness.
    fn retry_io<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&mut WebSocket<TcpIo<I>>) -> Result<T, WsError>,
    ) -> Poll<Result<T, WsError>> {
        loop {
            let io = self.ws.get_mut();
            io.read_blocked = false;
            io.write_blocked = false;
            match op(&mut self.ws) {
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    let io = self.ws.get_ref();
                    let mut retry = false;
                    // try_read/try_write clear readiness on WouldBlock, so Ready here means a
                    // new event arrived in between and the operation can make progress.
                    if io.read_blocked {
                        match io.tcp.poll_read_ready(cx) {
                            Poll::Ready(Ok(())) => retry = true,
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                            Poll::Pending => {}
                        }
                    }
                    if io.write_blocked {
                        match io.tcp.poll_write_ready(cx) {
                            Poll::Ready(Ok(())) => retry = true,
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                            Poll::Pending => {}
                        }
                    }
                    if !io.read_blocked && !io.write_blocked {
                        // WouldBlock from nowhere we know of: yield rather than spin or hang.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    if !retry {
                        return Poll::Pending;
                    }
                }
                r => return Poll::Ready(r),
            }
        }
    }
}

impl<I: Inbound> Stream for TcpWs<I> {
    type Item = Result<Message, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut().retry_io(cx, |ws| ws.read()) {
            Poll::Ready(Ok(m)) => Poll::Ready(Some(Ok(m))),
            Poll::Ready(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: Inbound> Sink<Message> for TcpWs<I> {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        if !this.ws.get_ref().sink_blocked {
            return Poll::Ready(Ok(()));
        }
        let r = std::task::ready!(this.retry_io(cx, |ws| ws.flush()));
        this.ws.get_mut().sink_blocked = false;
        Poll::Ready(r)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        let this = self.get_mut();
        this.ws.get_mut().gathering = true;
        let written = this.ws.write(item);
        this.ws.get_mut().gathering = false;
        match written {
            Ok(()) => Ok(()),
            // The message is queued in tungstenite's buffer; poll_ready flushes it first.
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                this.ws.get_mut().sink_blocked = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        let r = std::task::ready!(this.retry_io(cx, |ws| ws.flush()));
        this.ws.get_mut().sink_blocked = false;
        Poll::Ready(r)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        // close() queues our close frame once (or the reply to the peer's) and flushes; calling
        // it again while blocked only flushes.
        match std::task::ready!(self.get_mut().retry_io(cx, |ws| ws.close(None))) {
            Ok(()) | Err(WsError::ConnectionClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
