//! Reading and writing a connection's socket the way `may_minihttp` does: try the non-blocking socket
//! first, park on may's readiness flag only when it has nothing.

use std::io::{self, Read, Write};

use may::io::WaitIo;
use may::net::TcpStream;

/// Reads what the socket has, parking the coroutine until it is readable when it has nothing, and
/// updates `drained` (the connection's: the socket was found empty).
///
/// The socket is non-blocking (may made it so). may's own `TcpStream::read` tries a read, and on
/// `EAGAIN` parks through a per-call event source and reads again after waking; this is the shape of
/// `may_minihttp`'s loop instead, about 200 instructions cheaper per read
/// (`benches/server/instructions.sh`):
/// - `drained` (the previous read came back short, so the socket was empty then): wait for may's
///   readiness flag before reading. `wait_io` returns at once if an event arrived since it last
///   returned (it clears the flag as it returns), and every byte that arrives after that sets it, so
///   nothing is missed; it saves the read that would only say `EAGAIN` on an idle keep-alive socket.
/// - Otherwise read at once, and wait only on `EAGAIN`.
///
/// Events are edge-triggered: a hang-up (`EPOLLRDHUP`) that arrived with the last data is reported once,
/// by the wait before the read that took the data, and the end of file stays to be read. So a short read
/// does not count as "empty" when a wait saw a hang-up (a connection once parked forever that way:
/// `a_request_sent_with_the_end_of_its_stream_is_answered_then_closed`). For the same reason a write
/// that waited (`write_all_or_wait`) makes the next read try first.
///
/// A deadline ends a wait by shutting the socket down, which raises the flag and makes the read
/// return 0.
///
/// `inline(never)`, like `process_batch`: `wait_io` parks the coroutine, which may resume on another
/// worker thread; in a frame of its own, nothing computed from a thread-local before the wait is reused
/// after it.
#[inline(never)]
pub(crate) fn read_or_wait(stream: &mut TcpStream, buf: &mut [u8], drained: &mut bool) -> io::Result<usize> {
    const HANG_UP: usize = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as usize;
    let mut hung_up = false;
    if *drained {
        hung_up = stream.wait_io() & HANG_UP != 0;
    }
    loop {
        match stream.inner_mut().read(buf) {
            Err(e) if would_block(&e) => {
                hung_up = stream.wait_io() & HANG_UP != 0;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => {
                *drained = result.as_ref().is_ok_and(|&n| n < buf.len()) && !hung_up;
                return result;
            }
        }
    }
}

/// Writes all of `data`, parking the coroutine while the socket's send buffer is full (as
/// [`read_or_wait`]). Returns whether it had to wait.
#[inline(never)]
pub(crate) fn write_all_or_wait(stream: &mut TcpStream, mut data: &[u8]) -> io::Result<bool> {
    let mut waited = false;
    while !data.is_empty() {
        match stream.inner_mut().write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if would_block(&e) => {
                stream.wait_io();
                waited = true;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(waited)
}

/// `EAGAIN`, tested by number (`io::Error::kind` maps every errno through a table first).
fn would_block(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EAGAIN)
}

pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
}
