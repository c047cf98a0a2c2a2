//! The proxy's listing: one cursor over every node's keys.
//!
//! A page goes through the nodes one after another, each in its own listing order, with the node's own
//! cursor: the proxy's cursor is `p{node}.{set}.{node's cursor}` (`set` names the node list it counts
//! in, so a cursor from before a change of node set is refused rather than misread). A page asks one node
//! for what is left of `limit`; when that node's listing is over, it goes on with the next node, so a
//! page costs each node it reaches one page of its own, and the proxy keeps nothing between pages.
//!
//! A node lists only the keys it owns: a key on a node that is not its owner (a stray copy a client left
//! by writing around the proxy, or an old copy a move has not removed yet) is not listed, as a read
//! through the proxy would not find it. While keys move (a previous set exists), the previous set's nodes
//! are listed too, each with the keys it owned before that have a new owner: the keys not moved yet.
//! So outside a move, a key that lives throughout a listing appears exactly once; during one, a key that
//! moves while the listing runs may appear twice (on both owners) or not at all.

use std::sync::Arc;

use otkv_adapter_http::front::{percent, Front, HttpError, ListFrom, Responder, JSON};

use super::topology::Topology;
use super::upstream::{fan_out, Upstream};

#[derive(serde::Deserialize)]
struct NodePage {
    keys: Vec<String>,
    next: Option<String>,
}

/// Names a node list (FNV-1a over its URLs): a cursor counts nodes in the list it was made with.
fn set_mark(nodes: &[Arc<Upstream>]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for url in nodes.iter().map(|u| u.url()) {
        for b in url.bytes().chain([b'\n']) {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// A node's cursor is safe to carry inside the proxy's: it is all letters, digits and `-`.
fn plain(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Where a page starts: the index of the node asked first, and what its query says of where to start in
/// it (`&cursor=` or `&after=`; `None`: its first page).
fn start_of(
    from: &ListFrom<'_>,
    mark: u32,
    nodes: &[Arc<Upstream>],
    topology: &Topology,
) -> Result<(usize, Option<String>), HttpError> {
    let bad = |why: &str| HttpError::BadRequest(format!("invalid cursor: {why}"));
    match from {
        ListFrom::Start => Ok((0, None)),
        // The keys after `key`: the rest of its owner's listing, then the nodes after it.
        ListFrom::AfterKey(key) => {
            let owner = &topology.current.upstreams[topology.current.router.route(key)];
            let i = nodes.iter().position(|u| u.url() == owner.url()).unwrap_or(0);
            Ok((i, Some(format!("&after={}", percent::encode_segment(key)))))
        }
        ListFrom::Cursor(text) => {
            let parts = text.strip_prefix('p').and_then(|t| {
                let (node, rest) = t.split_once('.')?;
                let (set, cursor) = rest.split_once('.')?;
                Some((node.parse::<usize>().ok()?, u32::from_str_radix(set, 16).ok()?, cursor))
            });
            let Some((node, set, cursor)) = parts else {
                return Err(bad("give the `next` of the page before"));
            };
            if set != mark {
                return Err(bad("the node set changed since this listing began: start it again"));
            }
            if node >= nodes.len() || !(cursor.is_empty() || plain(cursor)) {
                return Err(bad("give the `next` of the page before"));
            }
            Ok((node, (!cursor.is_empty()).then(|| format!("&cursor={cursor}"))))
        }
    }
}

/// Whether `node` lists `key`: it owns it, or, during a move, owned it before and the key has a new owner
/// (not moved yet).
fn lists(topology: &Topology, node: &Upstream, key: &[u8]) -> bool {
    let owner = &topology.current.upstreams[topology.current.router.route(key)];
    if owner.url() == node.url() {
        return true;
    }
    topology.previous.as_ref().is_some_and(|p| p.upstreams[p.router.route(key)].url() == node.url())
}

/// `GET /v1/kv?prefix=&cursor=&limit=` at the proxy: a page of the keys of every node, one node after
/// another (module docs). A node that cannot answer fails the page (a partial one would silently miss
/// keys); the same cursor can be given again.
pub fn list(
    front: &Front,
    topology: &Topology,
    prefix: &[u8],
    from: &ListFrom<'_>,
    limit: usize,
    resp: &mut Responder<'_>,
) -> Result<u16, HttpError> {
    // The current set, then the previous set's other nodes.
    let nodes = topology.all();
    let mark = set_mark(&nodes);
    // Each key percent-encoded (at most three bytes a byte), quoted, and a comma; the cursor besides.
    let per_key = front.limits.max_key_bytes.saturating_mul(3).saturating_add(3);
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let (mut node, mut from) = start_of(from, mark, &nodes, topology)?;
    let next = loop {
        let up = &nodes[node];
        let want = limit - keys.len();
        let target = format!(
            "/v1/kv?prefix={}{}&limit={want}",
            percent::encode_segment(prefix),
            from.as_deref().unwrap_or_default()
        );
        let max_body = want.saturating_mul(per_key).saturating_add(per_key).saturating_add(1024);
        let answer =
            fan_out(std::slice::from_ref(up), &target, max_body).pop().unwrap_or(Err(HttpError::Internal));
        let (status, body) = answer?;
        let bad = |why: String| HttpError::BadGateway(format!("{} {why}", up.who()));
        if status != 200 {
            return Err(bad(format!(
                "answered {status} to the listing: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        let page: NodePage =
            serde_json::from_slice(&body).map_err(|e| bad(format!("sent an invalid listing: {e}")))?;
        if page.keys.len() > want {
            return Err(bad(format!("listed {} keys when asked for {want}", page.keys.len())));
        }
        for key in page.keys {
            let decoded =
                percent::decode(&key, false).ok_or_else(|| bad(format!("listed a malformed key {key:?}")))?;
            if decoded.starts_with(prefix) && lists(topology, up, &decoded) {
                keys.push(decoded.into_owned());
            }
        }
        match page.next {
            Some(cursor) if plain(&cursor) => break Some(format!("p{node}.{mark:08x}.{cursor}")),
            Some(cursor) => return Err(bad(format!("sent an invalid cursor {cursor:?}"))),
            None if node + 1 == nodes.len() => break None,
            None if keys.len() == limit => break Some(format!("p{}.{mark:08x}.", node + 1)),
            None => (node, from) = (node + 1, None),
        }
    };
    Ok(resp.send(200, Some(JSON), &otkv_adapter_http::front::listing_body(&keys, next.as_deref())))
}

#[cfg(test)]
mod tests {
    use super::plain;

    #[test]
    fn only_plain_node_cursors_are_carried() {
        assert!(plain("h0011aabb0011223344556677-6b31"));
        assert!(plain("k6b"));
        for bad in ["", "a.b", "a\"b", "a&b", "a b", "é"] {
            assert!(!plain(bad), "{bad:?}");
        }
    }
}
