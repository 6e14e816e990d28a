//! A TCP proxy on loopback in front of the API server, for one client whose traffic a test
//! holds up and later delivers, as a network that stalls and recovers does. TLS passes through
//! untouched (the serving certificate names 127.0.0.1), so the client cannot tell.

use std::{net::SocketAddr, sync::Arc};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};

pub struct HoldingProxy {
    addr: SocketAddr,
    held: Arc<watch::Sender<bool>>,
    _connections: tokio::task::JoinHandle<()>,
}

impl HoldingProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let held = Arc::new(watch::Sender::new(false));
        let accept = {
            let held = held.clone();
            tokio::spawn(async move {
                let mut connections = JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    connections.spawn(forward(client, upstream, held.subscribe()));
                }
            })
        };
        Self {
            addr,
            held,
            _connections: accept,
        }
    }

    /// `https://127.0.0.1:<port>`: the address the held client uses.
    pub fn server(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// From now on, what the client sends is kept here, not delivered.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Delivers everything kept, in order, and lets the traffic flow again.
    pub fn release(&self) {
        self.held.send_replace(false);
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self._connections.abort();
    }
}

/// One connection: the client's bytes go upstream unless held (then they wait here); the
/// server's bytes always go back.
async fn forward(client: TcpStream, upstream: SocketAddr, mut held: watch::Receiver<bool>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let answers = async {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    let requests = async {
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                read = from_client.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => kept.extend_from_slice(&buf[..n]),
                },
                changed = held.changed() => if changed.is_err() { break },
            }
            if !*held.borrow() && !kept.is_empty() {
                if to_server.write_all(&kept).await.is_err() {
                    break;
                }
                kept.clear();
            }
        }
        let _ = to_server.shutdown().await;
    };
    tokio::join!(answers, requests);
}
