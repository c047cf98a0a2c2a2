//! [`EtcdConn`]: the load generator's connection to an etcd member, over etcd's v3 JSON gateway
//! (`POST /v3/kv/put`, `POST /v3/kv/range`, keys and values in base64), on the harness's own HTTP/1.1
//! client, so pipelining, deadlines and the strict answer reader are the same as against OTKV.
//!
//! A read is etcd's default range, which is linearizable (the member confirms its leader's commit index
//! before answering); a write is committed on a majority of the cluster before its answer.

use base64::Engine as _;

use crate::client::HttpConn;
use crate::run_outcome::Refusal;
use crate::wire::Failure;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One connection to one etcd member.
#[derive(Debug)]
pub struct EtcdConn {
    http: HttpConn,
    /// A request body being built, and the value bytes before their encoding.
    scratch: Vec<u8>,
    value: Vec<u8>,
    /// The last value read, decoded.
    read: Vec<u8>,
}

impl EtcdConn {
    /// Over an HTTP connection to the member's client URL.
    pub fn over(http: HttpConn) -> EtcdConn {
        EtcdConn { http, scratch: Vec::new(), value: Vec::new(), read: Vec::new() }
    }

    /// Queues a read of `key`.
    pub fn push_get(&mut self, key: &[u8]) {
        self.scratch.clear();
        self.scratch.extend_from_slice(b"{\"key\":\"");
        append_b64(&mut self.scratch, key);
        self.scratch.extend_from_slice(b"\"}");
        self.http.push_post_json("/v3/kv/range", &self.scratch);
    }

    /// Queues a write of the value `write_body` appends to `key`.
    pub fn push_put(&mut self, key: &[u8], write_body: impl FnOnce(&mut Vec<u8>)) {
        self.value.clear();
        write_body(&mut self.value);
        self.scratch.clear();
        self.scratch.extend_from_slice(b"{\"key\":\"");
        append_b64(&mut self.scratch, key);
        self.scratch.extend_from_slice(b"\",\"value\":\"");
        append_b64(&mut self.scratch, &self.value);
        self.scratch.extend_from_slice(b"\"}");
        self.http.push_post_json("/v3/kv/put", &self.scratch);
    }

    /// Sends everything queued, with one write.
    pub fn send(&mut self) -> Result<(), Failure> {
        self.http.send()
    }

    /// Reads the answer to the next queued request: the value read (empty for a write), or a refusal: a
    /// status other than 200, or, for a read, no such key (`http_404`, as OTKV's answer would be).
    pub fn read_answer(&mut self, put: bool) -> Result<Result<&[u8], Refusal>, Failure> {
        let r = self.http.read_response(false)?;
        if r.status != 200 {
            return Ok(Err(Refusal::Http(r.status)));
        }
        if put {
            return Ok(Ok(&[]));
        }
        let Some(encoded) = json_string_after(r.body, b"\"value\":\"") else {
            return Ok(Err(Refusal::Http(404)));
        };
        self.read.clear();
        B64.decode_vec(encoded, &mut self.read).map_err(|_| Failure::Protocol)?;
        Ok(Ok(&self.read))
    }
}

fn append_b64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + base64::encoded_len(bytes.len(), true).unwrap_or(0), 0);
    let written = B64.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
}

/// The characters of the JSON string that follows `marker` (base64 has no escapes to undo).
fn json_string_after<'a>(body: &'a [u8], marker: &[u8]) -> Option<&'a [u8]> {
    let at = body.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let len = body[at..].iter().position(|&b| b == b'"')?;
    Some(&body[at..at + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_answer_gives_its_value() {
        let body = br#"{"header":{"revision":"2"},"kvs":[{"key":"YQ==","create_revision":"2","version":"1","value":"aGk="}],"count":"1"}"#;
        assert_eq!(json_string_after(body, b"\"value\":\""), Some(&b"aGk="[..]));
        assert_eq!(json_string_after(br#"{"header":{"revision":"2"}}"#, b"\"value\":\""), None);
        let mut out = b"x".to_vec();
        append_b64(&mut out, b"hi");
        assert_eq!(out, b"xaGk=");
    }
}
