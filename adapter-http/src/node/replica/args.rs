//! [`ReplicaArgs`]: the options that make a node a member of a replica group.

use std::path::PathBuf;

use super::state_dump::Members;

/// How this node takes part in a replica group (none of these: it is a node on its own).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Replica group")]
pub struct ReplicaArgs {
    /// Make this node member ID (from 1) of a replica group: every write is committed by a majority of
    /// the group's members (Raft) before it is acknowledged, and any member answers any request. With
    /// --peers, the group is created with those members; with --join, this member waits to be added to
    /// a running group; with neither, it starts a group of one, which grows by `POST
    /// /v1/replica/members`. Its data is the Raft log and snapshots in --data-dir (memory engines).
    #[arg(long, value_name = "ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub member: Option<u64>,
    /// The members a new group starts with, this one included: `1=http://10.0.0.1:7070,2=...`, the same
    /// list on each (as etcd's --initial-cluster). Read only when --data-dir holds no group yet.
    #[arg(long, value_name = "ID=URL,...", requires = "member", conflicts_with = "join", value_parser = parse_members)]
    pub peers: Option<Members>,
    /// Start empty and wait for the group's leader to add this member (`POST /v1/replica/members?add=ID&url=URL`
    /// to any member) and send it the data.
    #[arg(long, requires = "member")]
    pub join: bool,
    /// The URL the other members reach this one at (default: http:// and the address it listens on;
    /// https:// with --tls-cert).
    #[arg(long, value_name = "URL", requires = "member")]
    pub advertise_url: Option<String>,
    /// The CA that signs the other members' certificates, for `https://` member URLs (default: the
    /// system's roots). This member presents its own --tls-cert to them, for members that require client
    /// certificates (--tls-client-ca).
    #[arg(long, value_name = "FILE", requires = "member")]
    pub peer_tls_ca: Option<PathBuf>,
    /// A file whose first line is the token this member presents to the others (their --token-file
    /// must give it the `write` role). Needed when the members check tokens.
    #[arg(long, value_name = "FILE", requires = "member")]
    pub peer_token_file: Option<PathBuf>,
    /// Entries applied between two snapshots of the group's data; each snapshot drops the log before
    /// it, and a member too far behind is sent the latest one.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_entries: u64,
}

/// Whether `url` can be a member's: `http://HOST:PORT` or `https://HOST:PORT`.
pub fn is_member_url(url: &str) -> bool {
    ["http://", "https://"]
        .iter()
        .any(|s| url.strip_prefix(s).is_some_and(|h| !h.is_empty() && !h.contains('/')))
}

/// `ID=URL,ID=URL,...`: ids from 1, each once, `http://` or `https://` URLs.
pub fn parse_members(text: &str) -> Result<Members, String> {
    let mut members = Members::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, url) = part.split_once('=').ok_or_else(|| format!("`{part}`: write ID=URL"))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|&i| i > 0)
            .ok_or_else(|| format!("`{id}`: a member id is a whole number from 1"))?;
        let url = url.trim().trim_end_matches('/');
        if !is_member_url(url) {
            return Err(format!("`{url}`: a member's URL is http://HOST:PORT or https://HOST:PORT"));
        }
        if members.insert(id, url.to_string()).is_some() {
            return Err(format!("member {id} is named twice"));
        }
    }
    if members.is_empty() {
        return Err("name at least one member".into());
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::parse_members;

    #[test]
    fn member_lists() {
        let m = parse_members("1=http://a:1, 2=http://b:2/").unwrap();
        assert_eq!(m.get(&2).map(String::as_str), Some("http://b:2"));
        assert!(parse_members("0=http://a:1").is_err());
        assert!(parse_members("1=http://a:1,1=http://b:1").is_err());
        assert!(parse_members("1=https://a:1").is_ok());
        assert!(parse_members("1=ftp://a:1").is_err());
        assert!(parse_members("1=http://a:1/x").is_err());
        assert!(parse_members("1").is_err());
        assert!(parse_members("").is_err());
    }
}
