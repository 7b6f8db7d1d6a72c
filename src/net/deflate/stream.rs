//! The inbound layer ([`Inflater`]) around any async byte stream, for sessions that run on
//! tokio-tungstenite (TLS, and hyper's boxed stream when its type is unknown). Writes pass
//! straight through: compressed frames are made before tungstenite sees them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Inflater;

/// `S` with compressed messages inflated on the way in.
pub struct Inflating<S> {
    /// The stream underneath (TLS, ...).
    inner: S,
    /// The frame layer; boxed so it costs the session one word until a message arrives.
    layer: Box<Inflater>,
}

impl<S> Inflating<S> {
    /// Wraps `inner` for a session whose largest message is `max` bytes.
    pub fn new(inner: S, max: usize) -> Inflating<S> {
        Inflating {
            inner,
            layer: Box::new(Inflater::new(max)),
        }
    }

    /// Filters bytes read before the session started; see [`Inflater::filter_vec`].
    pub fn filter_vec(&mut self, part: Vec<u8>) -> Vec<u8> {
        self.layer.filter_vec(part)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.layer.has_pending() {
                let n = this.layer.serve(buf.initialize_unfilled());
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            this.layer.check()?;
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            if buf.filled().len() == start {
                // The end of the stream.
                return Poll::Ready(Ok(()));
            }
            let kept = this.layer.filter(&mut buf.filled_mut()[start..]);
            buf.set_filled(start + kept);
            if kept > 0 {
                return Poll::Ready(Ok(()));
            }
            // Everything read was compressed payload: read on (or serve what it completed).
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inflating<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
