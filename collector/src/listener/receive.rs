//! Batched receive: one `recvmmsg(2)` call fills up to [`BATCH_DATAGRAMS`] datagrams.
//!
//! In: a bound UDP socket (with its read timeout set). Out: the datagrams of one call, each with
//! its exporter's address, read in place from buffers owned by the [`BatchReceiver`].
//!
//! One system call per datagram was the receive thread's main cost at high rates (and each
//! blocking wake-up a context switch); with `MSG_WAITFORONE` the call blocks until the first
//! datagram (or the socket's read timeout, so shutdown is still noticed) and then takes whatever
//! else is queued without blocking, so a busy socket costs one call per batch and an idle one
//! adds no latency. `nix` provides the safe wrapper; the buffers are allocated once, zeroed
//! lazily by the kernel, so the pages a 64 KiB buffer never uses are never touched.

use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

/// Datagrams taken by one call at most. 64 × the largest UDP payload is 4 MiB of address space
/// per worker, of which only the first page or so of each buffer is ever touched by export
/// datagrams (1.5 to 9 KiB).
pub const BATCH_DATAGRAMS: usize = 64;
/// Largest UDP payload.
pub const MAX_DATAGRAM: usize = 65_535;

/// Receives datagrams from one socket in batches.
pub struct BatchReceiver {
    socket: std::net::UdpSocket,
    headers: MultiHeaders<SockaddrStorage>,
    buffers: Vec<Vec<u8>>,
    received: Vec<(usize, Option<IpAddr>)>,
}

impl std::fmt::Debug for BatchReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchReceiver")
            .field("socket", &self.socket)
            .field("received", &self.received.len())
            .finish_non_exhaustive()
    }
}

impl BatchReceiver {
    pub fn new(socket: std::net::UdpSocket) -> Self {
        Self {
            socket,
            headers: MultiHeaders::preallocate(BATCH_DATAGRAMS, None),
            buffers: (0..BATCH_DATAGRAMS).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            received: Vec::with_capacity(BATCH_DATAGRAMS),
        }
    }

    pub fn socket(&self) -> &std::net::UdpSocket {
        &self.socket
    }

    /// Waits for at least one datagram (at most the socket's read timeout) and takes every one
    /// already queued, up to [`BATCH_DATAGRAMS`]. Returns how many; read them with
    /// [`BatchReceiver::datagram`]. A timeout is `Ok(0)`.
    pub fn receive(&mut self) -> std::io::Result<usize> {
        self.received.clear();
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .buffers
            .iter_mut()
            .map(|buffer| [IoSliceMut::new(buffer.as_mut_slice())])
            .collect();
        let result = recvmmsg(
            self.socket.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        );
        match result {
            Ok(messages) => {
                for message in messages {
                    let source = message.address.as_ref().and_then(source_ip);
                    self.received.push((message.bytes, source));
                }
                Ok(self.received.len())
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => Ok(0),
            Err(errno) => Err(std::io::Error::from(errno)),
        }
    }

    /// The `index`-th datagram of the last [`BatchReceiver::receive`]: its payload and the
    /// exporter's address (`None` if the kernel gave no IP address, which UDP always does).
    /// A datagram larger than the buffer (impossible over UDP) would be truncated to it.
    pub fn datagram(&self, index: usize) -> Option<(&[u8], Option<IpAddr>)> {
        let (len, source) = *self.received.get(index)?;
        let buffer = self.buffers.get(index)?;
        Some((buffer.get(..len).unwrap_or(buffer), source))
    }
}

fn source_ip(address: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4).ip());
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)).ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receiver() -> (BatchReceiver, SocketAddr) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let address = socket.local_addr().expect("address");
        (BatchReceiver::new(socket), address)
    }

    #[test]
    fn one_call_takes_every_queued_datagram_with_its_source() {
        let (mut receiver, target) = receiver();
        let sender = std::net::UdpSocket::bind("127.0.0.2:0").expect("sender");
        for i in 0..100u32 {
            let payload = vec![i as u8; 100 + i as usize];
            sender.send_to(&payload, target).expect("send");
        }
        let mut seen = Vec::new();
        while seen.len() < 100 {
            let n = receiver.receive().expect("receive");
            assert!(n > 0, "datagrams were queued, saw {} of 100", seen.len());
            assert!(n <= BATCH_DATAGRAMS);
            for index in 0..n {
                let (payload, source) = receiver.datagram(index).expect("datagram");
                assert_eq!(source, Some(IpAddr::from([127, 0, 0, 2])));
                seen.push((payload.len(), payload.first().copied()));
            }
        }
        let expected: Vec<_> = (0..100u32).map(|i| (100 + i as usize, Some(i as u8))).collect();
        assert_eq!(seen, expected, "in order, none lost, none cut");
        assert_eq!(receiver.receive().expect("idle"), 0, "an idle socket times out");
        assert!(receiver.datagram(0).is_none());
    }

    #[test]
    fn ipv4_exporters_on_a_dual_stack_socket_keep_their_mapped_address() {
        let Ok(socket) = std::net::UdpSocket::bind("[::]:0") else {
            return; // no IPv6 on this machine: nothing to check
        };
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let port = socket.local_addr().expect("address").port();
        let mut receiver = BatchReceiver::new(socket);
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
        sender.send_to(b"x", ("127.0.0.1", port)).expect("send");
        assert_eq!(receiver.receive().expect("receive"), 1);
        let (payload, source) = receiver.datagram(0).expect("datagram");
        assert_eq!(payload, b"x");
        let expected: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert_eq!(source, Some(expected), "what recv_from reported before");
    }
}
