//! What both head parsers (the scanner and httparse) produce: the method, the request line, and the cap on
//! header fields they share.

/// The most header fields a request may carry.
pub const MAX_HEADERS: usize = 64;

/// The request methods the routes know; anything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// PUT
    Put,
    /// POST
    Post,
    /// DELETE
    Delete,
    /// Any other method.
    Other,
}

/// The request line and the head's length, however the head was parsed.
#[derive(Debug)]
pub(crate) struct Line<'b> {
    pub(crate) method: Method,
    pub(crate) target: &'b str,
    pub(crate) http10: bool,
    /// Up to and including the blank line.
    pub(crate) head_len: usize,
}
