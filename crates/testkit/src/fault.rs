//! Failure injection shared by the fakes: what a fake does instead of
//! answering, and a listener whose connections a handler can cut.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How a fake misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status (and the error body of the service: an
    /// HTML page for Slack, as a proxy in front of it sends; GitHub's JSON).
    Status(u16),
    /// The rate limit: `429` with `Retry-After: <seconds>`.
    RateLimited(u64),
    /// Read the request and never answer (the connection stays open).
    Hang,
    /// Read the request and close the connection without a byte of answer.
    Drop,
}

/// Kill switches of the accepted connections, by peer address.
#[derive(Debug, Clone, Default)]
pub struct Conns(Arc<Mutex<HashMap<SocketAddr, Arc<AtomicBool>>>>);

impl Conns {
    /// Cut the connection from `peer`: nothing more is read from or written
    /// to it, so hyper closes it without an answer.
    pub fn cut(&self, peer: Peer) {
        if let Some(k) = self.0.lock().unwrap().get(&peer.0) {
            k.store(true, Ordering::SeqCst);
        }
    }
}

/// The peer address of a connection to a fake.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// A TCP listener whose connections a fake can cut from a handler.
#[derive(Debug)]
pub struct KillableListener {
    inner: tokio::net::TcpListener,
    conns: Conns,
}

impl KillableListener {
    /// Accept on `inner`, registering every connection in `conns`.
    pub fn new(inner: tokio::net::TcpListener, conns: Conns) -> Self {
        KillableListener { inner, conns }
    }
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok((tcp, addr)) = self.inner.accept().await {
                let killed = Arc::new(AtomicBool::new(false));
                self.conns.0.lock().unwrap().insert(addr, killed.clone());
                return (KillableStream { tcp, killed }, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// A connection that, once killed, neither reads nor writes another byte.
#[derive(Debug)]
pub struct KillableStream {
    tcp: tokio::net::TcpStream,
    killed: Arc<AtomicBool>,
}

impl KillableStream {
    fn cut(&self) -> Option<std::io::Error> {
        self.killed
            .load(Ordering::SeqCst)
            .then(|| std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut by the fake"))
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.cut() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(e) = self.cut() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.cut() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Serve `app` on `listener` (its connections registered in `conns`) until the
/// runtime ends.
pub fn serve_killable(listener: tokio::net::TcpListener, conns: Conns, app: axum::Router) {
    let listener = KillableListener::new(listener, conns);
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .await
            .unwrap();
    });
}

/// A shared call hook: sees every call a fake records (or would record).
pub type Observer<C> = Arc<dyn Fn(&C) + Send + Sync>;
