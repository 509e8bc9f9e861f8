//! An output queue of bytes with a high-water mark.
//!
//! Producers append whole messages; the loop writes from the front until the
//! sink would block. Callers stop reading from the source that feeds a queue
//! while it is above its high-water mark (`is_full`), which turns a slow reader
//! into backpressure instead of unbounded memory.

use std::io::{self, Write};

pub struct OutBuf {
    data: Vec<u8>,
    head: usize,
    high_water: usize,
}

/// Capacity kept after a large message has drained; anything above is freed.
const RETAIN: usize = 256 * 1024;

impl OutBuf {
    pub fn new(high_water: usize) -> Self {
        OutBuf {
            data: Vec::new(),
            head: 0,
            high_water,
        }
    }

    pub fn len(&self) -> usize {
        self.data.len() - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the producer feeding this queue should pause.
    pub fn is_full(&self) -> bool {
        self.len() >= self.high_water
    }

    /// Appends one message as exactly one line: the message, then a newline.
    /// Every message queued here is validated JSON, in which a raw CR or LF
    /// can only be whitespace between tokens (strings must escape them), so
    /// each becomes a space: a pretty-printed body reaches a stdio peer as
    /// one message, never as several.
    pub fn push_line(&mut self, msg: &[u8]) {
        self.data.reserve(msg.len() + 1);
        let start = self.data.len();
        self.data.extend_from_slice(msg);
        if memchr::memchr2(b'\n', b'\r', msg).is_some() {
            for b in &mut self.data[start..] {
                if matches!(*b, b'\n' | b'\r') {
                    *b = b' ';
                }
            }
        }
        self.data.push(b'\n');
    }

    /// Appends bytes as they are (already framed: HTTP, SSE).
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// Writes as much as the sink takes. `Ok(true)` when the queue is empty,
    /// `Ok(false)` when the sink would block.
    pub fn flush_to<W: Write>(&mut self, sink: &mut W) -> io::Result<bool> {
        while self.head < self.data.len() {
            match sink.write(&self.data[self.head..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let asked = self.data.len() - self.head;
                    self.head += n;
                    // A short write to a pipe or socket means it is full: the
                    // next write would only fail with EAGAIN, so skip it.
                    if n < asked {
                        self.compact();
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.compact();
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.clear();
        Ok(true)
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.head = 0;
        if self.data.capacity() > RETAIN {
            self.data.shrink_to(RETAIN);
        }
    }

    fn compact(&mut self) {
        if self.head > 0 && self.head >= self.data.len() / 2 {
            self.data.drain(..self.head);
            self.head = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes at most `room` bytes, then would block.
    struct Tight {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Tight {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut q = OutBuf::new(8);
        q.push_line(b"hello");
        q.push_line(b"world");
        assert!(q.is_full());
        let mut sink = Tight {
            got: Vec::new(),
            room: 4,
        };
        assert!(!q.flush_to(&mut sink).unwrap());
        assert_eq!(q.len(), 8);
        sink.room = 100;
        assert!(q.flush_to(&mut sink).unwrap());
        assert_eq!(sink.got, b"hello\nworld\n");
        assert!(q.is_empty() && !q.is_full());
    }

    #[test]
    fn a_pretty_printed_message_is_queued_as_one_line() {
        let mut q = OutBuf::new(1024);
        q.push_line(b"{\r\n  \"jsonrpc\": \"2.0\",\n  \"id\": 1\n}");
        q.push_line(b"{\"id\":2}");
        let mut sink = Tight {
            got: Vec::new(),
            room: usize::MAX,
        };
        assert!(q.flush_to(&mut sink).unwrap());
        assert_eq!(
            sink.got,
            b"{    \"jsonrpc\": \"2.0\",   \"id\": 1 }\n{\"id\":2}\n".as_slice()
        );
        let text = String::from_utf8(sink.got).unwrap();
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("each line is one message");
        }
    }

    #[test]
    fn large_buffers_are_released_after_draining() {
        let mut q = OutBuf::new(1024);
        q.push_line(&vec![b'x'; 4 * 1024 * 1024]);
        let mut sink = Tight {
            got: Vec::new(),
            room: usize::MAX,
        };
        assert!(q.flush_to(&mut sink).unwrap());
        assert!(q.data.capacity() <= RETAIN);
    }
}
