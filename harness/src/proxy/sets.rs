//! How the proxy's node sets change: re-read from `--nodes-file` on SIGHUP ([`NodeSets::reload`], as
//! [`plan_reload`] says), and the previous set dropped when the mover says the move is over
//! ([`NodeSets::settle`], `POST /v1/reshard/done`). Each connection takes the sets in force at its next
//! batch ([`NodeSets::now`]), never in the middle of one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use otkv_adapter_http::front::lock;

use super::topology::{plan_reload, Builder, NodeSet, NodesFile, Topology};
use crate::target::Target;

/// The sets in force, and what changes them.
#[derive(Debug)]
pub struct NodeSets {
    topology: Mutex<Arc<Topology>>,
    /// Bumped whenever `topology` changes: each connection takes the new one at its next batch.
    generation: AtomicU64,
    builder: Builder,
    nodes_file: Option<NodesFile>,
}

impl NodeSets {
    /// Serving `topology`, built by `builder`, re-read from `nodes_file` if there is one.
    pub fn new(builder: Builder, nodes_file: Option<NodesFile>, topology: Topology) -> NodeSets {
        NodeSets {
            topology: Mutex::new(Arc::new(topology)),
            generation: AtomicU64::new(0),
            builder,
            nodes_file,
        }
    }

    /// The sets in force and their generation.
    pub fn now(&self) -> (Arc<Topology>, u64) {
        let generation = self.generation.load(Relaxed);
        (Arc::clone(&lock(&self.topology)), generation)
    }

    /// Changes whenever the sets do.
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// Re-reads `--nodes-file` and takes its sets as [`plan_reload`] says (new connections take them at
    /// their next batch); when they are not the file's, says why and writes them back.
    pub fn reload(&self) -> Result<(), String> {
        let Some(file) = &self.nodes_file else { return Ok(()) };
        let (current, previous) = file.read()?;
        let urls = |urls: &[String]| -> Result<Vec<String>, String> {
            Ok(crate::nodes::remote_targets(urls, &self.builder.secure)?.iter().map(Target::url).collect())
        };
        let (current, previous) = (urls(&current)?, urls(&previous)?);
        let mut topology = lock(&self.topology);
        let now = |set: Option<&NodeSet>| -> Vec<String> {
            set.map(|s| s.upstreams.iter().map(|u| u.url()).collect()).unwrap_or_default()
        };
        let (now_current, now_previous) = (now(Some(&topology.current)), now(topology.previous.as_ref()));
        let plan = match plan_reload(&now_current, &now_previous, current, previous) {
            Ok(plan) => plan,
            Err(why) => {
                let note = format!("written back by harness proxy: {why}");
                file.write(&now_current, &now_previous, &note)?;
                return Err(why);
            }
        };
        if let Some(why) = &plan.amended {
            tracing::warn!(nodes = %plan.current.join(" "), previous = %plan.previous.join(" "), "SIGHUP: {why}");
            file.write(&plan.current, &plan.previous, &format!("written back by harness proxy: {why}"))?;
        }
        let known = topology.all();
        let mut next = Topology::new(
            self.builder.set(&plan.current, &known)?,
            if plan.previous.is_empty() { None } else { Some(self.builder.set(&plan.previous, &known)?) },
        );
        next.note = plan.amended;
        tracing::info!(nodes = %plan.current.join(" "), previous = %plan.previous.join(" "), "node sets re-read");
        topology.retire();
        *topology = Arc::new(next);
        self.generation.fetch_add(1, Relaxed);
        Ok(())
    }

    /// The move is over: the previous set goes (and out of the nodes file). Returns the current set's
    /// URLs.
    pub fn settle(&self) -> Result<Vec<String>, String> {
        let mut topology = lock(&self.topology);
        let urls: Vec<String> = topology.current.upstreams.iter().map(|u| u.url()).collect();
        if topology.previous.is_some() {
            if let Some(file) = &self.nodes_file {
                file.settle(&urls)?;
            }
            let names: Vec<String> = topology.current.upstreams.iter().map(|u| u.name.clone()).collect();
            let current = NodeSet {
                router: self.builder.routing.build(&names),
                upstreams: topology.current.upstreams.clone(),
            };
            topology.retire();
            *topology = Arc::new(Topology::new(current, None));
            self.generation.fetch_add(1, Relaxed);
            tracing::info!(nodes = %urls.join(" "), "move over: previous node set dropped");
        }
        Ok(urls)
    }
}
