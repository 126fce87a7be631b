//! One STOMP connection to one broker address: TCP or TLS (our own roots, an optional client
//! certificate), CONNECT/CONNECTED with heart-beats negotiated, then SEND frames written by the
//! publisher while a reader task reports RECEIPTs, ERRORs and silence.
//!
//! Invariants: every wait is bounded ([`CONNECT_TIMEOUT`], [`WRITE_TIMEOUT`], the negotiated
//! heart-beat); a connection that misses one is reported closed and dropped, never waited on.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::BytesMut;
use rustls::{ClientConfig, pki_types::ServerName};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf},
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
    time::{Instant, timeout},
};

use super::frame::{self, Frame, Incoming};

/// How long a broker may take to accept TCP, finish TLS and answer CONNECT.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one frame may take to be written: a broker that stops reading (flow control gone
/// wrong, a hung host) must not stall the publisher.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The heart-beat we offer and ask for (ms). FTS3's CMS client uses a 2 s inactivity limit;
/// 10 s finds a dead broker soon enough without waking an idle one often.
pub const HEART_BEAT_MS: u64 = 10_000;
/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How to reach and log in to a broker.
#[derive(Clone)]
pub struct Login {
    /// `None`: plain TCP.
    pub tls: Option<Arc<ClientConfig>>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The `host` header (RabbitMQ's virtual host).
    pub vhost: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Login")
            .field("tls", &self.tls.is_some())
            .field("username", &self.username)
            .field("vhost", &self.vhost)
            .finish()
    }
}

/// What the reader task reports, tagged with the connection's id.
#[derive(Debug)]
pub enum Report {
    Receipt(u64, String),
    Closed(u64, String),
}

/// A connected, logged-in broker connection.
pub struct Connection {
    pub id: u64,
    pub address: SocketAddr,
    writer: WriteHalf<Box<dyn Stream>>,
    reader: JoinHandle<()>,
    /// How often we must send something (0: never).
    pub send_every: Duration,
    pub last_write: Instant,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("broker refused the login: {0}")]
    Refused(String),
    #[error("broker closed the connection during login")]
    Closed,
    #[error("bad frame from the broker: {0}")]
    Frame(#[from] frame::FrameError),
    #[error("bad TLS server name {0}")]
    ServerName(String),
}

/// The (client, server) heart-beat periods in ms from our offer and the CONNECTED header.
fn negotiate(header: Option<&str>) -> (u64, u64) {
    let (sx, sy) = header
        .and_then(|h| h.split_once(','))
        .map(|(a, b)| (a.trim().parse().unwrap_or(0), b.trim().parse().unwrap_or(0)))
        .unwrap_or((0u64, 0u64));
    let send = if sy == 0 { 0 } else { HEART_BEAT_MS.max(sy) };
    let expect = if sx == 0 { 0 } else { HEART_BEAT_MS.max(sx) };
    (send, expect)
}

impl Connection {
    /// Connect to `address` (`hostname` for TLS and logs), log in, and start the reader.
    pub async fn open(
        id: u64,
        address: SocketAddr,
        hostname: &str,
        login: &Login,
        reports: mpsc::Sender<Report>,
    ) -> Result<Connection, ConnectError> {
        timeout(
            CONNECT_TIMEOUT,
            Self::open_inner(id, address, hostname, login, reports),
        )
        .await
        .map_err(|_| ConnectError::Timeout(CONNECT_TIMEOUT))?
    }

    async fn open_inner(
        id: u64,
        address: SocketAddr,
        hostname: &str,
        login: &Login,
        reports: mpsc::Sender<Report>,
    ) -> Result<Connection, ConnectError> {
        let tcp = TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match &login.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = ServerName::try_from(hostname.to_string())
                    .map_err(|_| ConnectError::ServerName(hostname.to_string()))?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                Box::new(connector.connect(name, tcp).await?)
            }
        };
        let (mut read, mut writer) = tokio::io::split(stream);
        let mut connect = Frame::new("CONNECT")
            .header("accept-version", "1.2")
            .header("host", login.vhost.clone())
            .header("heart-beat", format!("{HEART_BEAT_MS},{HEART_BEAT_MS}"));
        if let Some(user) = &login.username {
            connect = connect.header("login", user.clone());
        }
        if let Some(pass) = &login.password {
            connect = connect.header("passcode", pass.clone());
        }
        writer.write_all(&connect.encode()).await?;
        writer.flush().await?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let connected = loop {
            match frame::decode(&mut buf)? {
                Some(Incoming::Frame(f)) if f.command == "CONNECTED" => break f,
                Some(Incoming::Frame(f)) if f.command == "ERROR" => {
                    let text = f.get("message").unwrap_or("").to_string();
                    return Err(ConnectError::Refused(text));
                }
                Some(_) => continue,
                None => {
                    if read.read_buf(&mut buf).await? == 0 {
                        return Err(ConnectError::Closed);
                    }
                }
            }
        };
        let (send, expect) = negotiate(connected.get("heart-beat"));
        // A broker may be a little late: allow twice its period before calling it dead.
        let silence = (expect > 0).then(|| Duration::from_millis(expect * 2));
        let reader = tokio::spawn(read_loop(id, read, buf, silence, reports));
        Ok(Connection {
            id,
            address,
            writer,
            reader,
            send_every: Duration::from_millis(send),
            last_write: Instant::now(),
        })
    }

    /// Write encoded frames (bounded by [`WRITE_TIMEOUT`]).
    pub async fn send_raw(&mut self, frames: &[u8]) -> Result<(), ConnectError> {
        self.write(frames).await
    }

    /// A heart-beat, if one is due.
    pub async fn beat_if_due(&mut self) -> Result<(), ConnectError> {
        if self.send_every.is_zero() || self.last_write.elapsed() < self.send_every / 2 {
            return Ok(());
        }
        self.write(b"\n").await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ConnectError> {
        let w = async {
            self.writer.write_all(bytes).await?;
            self.writer.flush().await
        };
        timeout(WRITE_TIMEOUT, w)
            .await
            .map_err(|_| ConnectError::Timeout(WRITE_TIMEOUT))??;
        self.last_write = Instant::now();
        Ok(())
    }
}

async fn read_loop(
    id: u64,
    mut read: ReadHalf<Box<dyn Stream>>,
    mut buf: BytesMut,
    silence: Option<Duration>,
    reports: mpsc::Sender<Report>,
) {
    let why = loop {
        match frame::decode(&mut buf) {
            Err(e) => break format!("bad frame from the broker: {e}"),
            Ok(Some(Incoming::HeartBeat)) => continue,
            Ok(Some(Incoming::Frame(f))) => match f.command.as_str() {
                "RECEIPT" => {
                    let receipt = f.get("receipt-id").unwrap_or("").to_string();
                    if reports.send(Report::Receipt(id, receipt)).await.is_err() {
                        return;
                    }
                }
                "ERROR" => {
                    break format!(
                        "broker error: {} {}",
                        f.get("message").unwrap_or(""),
                        String::from_utf8_lossy(&f.body).trim()
                    );
                }
                _ => continue,
            },
            Ok(None) => {
                buf.reserve(READ_CHUNK);
                let read = read.read_buf(&mut buf);
                let n = match silence {
                    Some(limit) => match timeout(limit, read).await {
                        Ok(r) => r,
                        Err(_) => break format!("no heart-beat from the broker for {limit:?}"),
                    },
                    None => read.await,
                };
                match n {
                    Ok(0) => break "the broker closed the connection".to_string(),
                    Ok(_) => continue,
                    Err(e) => break format!("read failed: {e}"),
                }
            }
        }
    };
    let _ = reports.send(Report::Closed(id, why)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heart_beats_are_negotiated_as_stomp_says() {
        assert_eq!(negotiate(Some("0,0")), (0, 0));
        assert_eq!(negotiate(None), (0, 0));
        assert_eq!(negotiate(Some("5000,20000")), (20_000, 10_000));
        assert_eq!(negotiate(Some("4000,4000")), (10_000, 10_000));
        assert_eq!(negotiate(Some("junk")), (0, 0));
    }
}
