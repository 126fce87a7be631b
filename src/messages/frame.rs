//! STOMP 1.2 frames: `COMMAND\n`, `name:value\n` headers, a blank line, the body and a NUL
//! (<https://stomp.github.io/stomp-specification-1.2.html>). Encoding escapes header values
//! (`\\`, `\n`, `\r`, `:`) except in CONNECT/CONNECTED, as the specification says; decoding
//! reads what a broker sends (CONNECTED, RECEIPT, ERROR, MESSAGE and heart-beat EOLs).
//!
//! Invariants: decoding never panics and never holds more than [`MAX_FRAME`] bytes of one frame:
//! a hostile or broken broker gets the connection closed, never the service's memory.

use bytes::{Buf, BytesMut};

/// Largest frame accepted from a broker. Brokers send us only short control frames (CONNECTED,
/// RECEIPT, ERROR with a message); 1 MiB leaves room for a verbose ERROR and stops a broker
/// that never sends the NUL from growing the buffer without end.
pub const MAX_FRAME: usize = 1 << 20;

/// Most headers in one frame, for the same reason (a broker sends a handful).
pub const MAX_HEADERS: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame larger than {MAX_FRAME} bytes")]
    TooLarge,
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What arrives on the wire: a frame, or a heart-beat (a lone EOL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Frame(Frame),
    HeartBeat,
}

impl Frame {
    pub fn new(command: &str) -> Frame {
        Frame {
            command: command.to_string(),
            ..Frame::default()
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Frame {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Frame {
        self.body = body.into();
        self
    }

    /// The first value of `name` (STOMP 1.2: a repeated header's first occurrence wins).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn escapes(&self) -> bool {
        !matches!(self.command.as_str(), "CONNECT" | "CONNECTED" | "STOMP")
    }

    /// The bytes on the wire. A frame with a body carries `content-length`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.body.len());
        out.extend_from_slice(self.command.as_bytes());
        out.push(b'\n');
        let escape = self.escapes();
        for (k, v) in &self.headers {
            push_header_text(&mut out, k, escape);
            out.push(b':');
            push_header_text(&mut out, v, escape);
            out.push(b'\n');
        }
        if !self.body.is_empty() && self.get("content-length").is_none() {
            out.extend_from_slice(format!("content-length:{}\n", self.body.len()).as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out.push(0);
        out
    }
}

fn push_header_text(out: &mut Vec<u8>, text: &str, escape: bool) {
    if !escape {
        // CONNECT values cannot be escaped; a line break would split the header, so it goes.
        out.extend(text.bytes().filter(|b| !matches!(b, b'\n' | b'\r')));
        return;
    }
    for b in text.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b':' => out.extend_from_slice(b"\\c"),
            _ => out.push(b),
        }
    }
}

fn unescape(raw: &[u8], escape: bool) -> Result<String, FrameError> {
    let text = std::str::from_utf8(raw).map_err(|_| FrameError::Malformed("header not UTF-8"))?;
    if !escape {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('c') => out.push(':'),
            _ => return Err(FrameError::Malformed("undefined escape in a header")),
        }
    }
    Ok(out)
}

/// Take one frame or heart-beat off the front of `buf`; `None` when more bytes are needed.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Incoming>, FrameError> {
    // Heart-beats: EOLs between frames.
    match buf.first() {
        None => return Ok(None),
        Some(b'\n') => {
            buf.advance(1);
            return Ok(Some(Incoming::HeartBeat));
        }
        Some(b'\r') => {
            if buf.len() < 2 {
                return Ok(None);
            }
            if buf[1] != b'\n' {
                return Err(FrameError::Malformed("CR without LF"));
            }
            buf.advance(2);
            return Ok(Some(Incoming::HeartBeat));
        }
        _ => {}
    }
    // The head ends at the first blank line.
    let Some(head_end) = find_blank_line(buf) else {
        return if buf.len() > MAX_FRAME {
            Err(FrameError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let (head_len, sep_len) = head_end;
    let head = &buf[..head_len];
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let command = lines.next().ok_or(FrameError::Malformed("no command"))?;
    let command = std::str::from_utf8(command)
        .map_err(|_| FrameError::Malformed("command not UTF-8"))?
        .to_string();
    if command.is_empty() || !command.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(FrameError::Malformed("bad command"));
    }
    let escape = command != "CONNECTED";
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() >= MAX_HEADERS {
            return Err(FrameError::TooManyHeaders);
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or(FrameError::Malformed("header without ':'"))?;
        headers.push((
            unescape(&line[..colon], escape)?,
            unescape(&line[colon + 1..], escape)?,
        ));
    }
    let frame_head = Frame {
        command,
        headers,
        body: Vec::new(),
    };
    let body_start = head_len + sep_len;
    let body_len = match frame_head.get("content-length") {
        Some(v) => {
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| FrameError::Malformed("bad content-length"))?;
            if n > MAX_FRAME {
                return Err(FrameError::TooLarge);
            }
            if buf.len() < body_start + n + 1 {
                return Ok(None);
            }
            if buf[body_start + n] != 0 {
                return Err(FrameError::Malformed("no NUL after content-length bytes"));
            }
            n
        }
        None => match buf[body_start..].iter().position(|b| *b == 0) {
            Some(n) => n,
            None if buf.len() > MAX_FRAME => return Err(FrameError::TooLarge),
            None => return Ok(None),
        },
    };
    let mut frame = frame_head;
    frame.body = buf[body_start..body_start + body_len].to_vec();
    buf.advance(body_start + body_len + 1);
    Ok(Some(Incoming::Frame(frame)))
}

/// Where the head ends: (head length, separator length) for `\n\n` or `\r\n\r\n` (or mixed).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            let rest = &buf[i + 1..];
            if rest.first() == Some(&b'\n') {
                return Some((i, 2));
            }
            if rest.starts_with(b"\r\n") {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Incoming>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(i) = decode(&mut buf)? {
            out.push(i);
        }
        Ok(out)
    }

    #[test]
    fn send_frames_escape_headers_and_carry_content_length() {
        let f = Frame::new("SEND")
            .header("destination", "/topic/a:b")
            .header("vo", "x\\y\nz")
            .body("{} ");
        let wire = f.encode();
        assert_eq!(
            wire,
            b"SEND\ndestination:/topic/a\\cb\nvo:x\\\\y\\nz\ncontent-length:3\n\n{} \0".to_vec()
        );
        // And the codec reads its own frames back, as a broker would deliver them.
        let back = decode_all(&f.encode()).unwrap();
        assert_eq!(back, vec![Incoming::Frame(f.header("content-length", "3"))]);
    }

    #[test]
    fn connect_frames_are_not_escaped() {
        let f = Frame::new("CONNECT").header("login", "a:b");
        assert_eq!(f.encode(), b"CONNECT\nlogin:a:b\n\n\0".to_vec());
    }

    #[test]
    fn broker_frames_heartbeats_and_partial_input() {
        let wire = b"\nCONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0\r\nRECEIPT\r\nreceipt-id:m-7\r\n\r\n\0ERROR\nmessage:no\\cway\ncontent-length:2\n\na\0\0";
        let all = decode_all(wire).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[0], Incoming::HeartBeat);
        let Incoming::Frame(connected) = &all[1] else {
            panic!()
        };
        assert_eq!(connected.get("version"), Some("1.2"));
        let Incoming::Frame(receipt) = &all[3] else {
            panic!()
        };
        assert_eq!(receipt.command, "RECEIPT");
        assert_eq!(receipt.get("receipt-id"), Some("m-7"));
        let Incoming::Frame(error) = &all[4] else {
            panic!()
        };
        assert_eq!(error.get("message"), Some("no:way"));
        assert_eq!(
            error.body,
            b"a\0".to_vec(),
            "content-length allows NUL in the body"
        );
        // Fed a byte at a time, the same frames come out.
        let mut buf = BytesMut::new();
        let mut count = 0;
        for b in wire.iter() {
            buf.extend_from_slice(&[*b]);
            while decode(&mut buf).unwrap().is_some() {
                count += 1;
            }
        }
        assert_eq!(count, 5);
    }

    #[test]
    fn hostile_input_is_refused_without_panic_or_unbounded_growth() {
        for bad in [
            &b"lower\n\n\0"[..],
            b"RECEIPT\nno-colon\n\n\0",
            b"RECEIPT\nbad:\\x\n\n\0",
            b"RECEIPT\ncontent-length:zz\n\n\0",
            b"RECEIPT\ncontent-length:1\n\nab\0",
            b"\rX",
            b"RECEIPT\nk:\xff\n\n\0",
        ] {
            assert!(decode_all(bad).is_err(), "{bad:?}");
        }
        let huge = vec![b'A'; MAX_FRAME + 10];
        assert_eq!(decode_all(&huge), Err(FrameError::TooLarge));
        let mut no_nul = b"MESSAGE\n\n".to_vec();
        no_nul.extend(vec![b'x'; MAX_FRAME + 10]);
        assert_eq!(decode_all(&no_nul), Err(FrameError::TooLarge));
        let long = format!("RECEIPT\ncontent-length:{}\n\n", usize::MAX);
        assert!(decode_all(long.as_bytes()).is_err());
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}:v\n")).collect();
        assert_eq!(
            decode_all(format!("RECEIPT\n{many}\n\0").as_bytes()),
            Err(FrameError::TooManyHeaders)
        );
        // Pseudo-random garbage: every prefix either decodes, waits or errs; never panics.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let len = (state % 64) as usize;
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let alphabet = b"RECIPT:\\\n\r\0abc-lngth0123456789";
                bytes.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            let _ = decode_all(&bytes);
        }
    }
}
