//! An in-process network for tests: nodes in one runtime, with drop, delay and partition
//! filters applied to raft messages and forwarded requests alike.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use nines_core::NodeId;
use raft::eraftpb::{Message, MessageType};

use super::{BoxFuture, ForwardHandler, ForwardKind, Transport};
use crate::{Mailbox, Members, ProposeError};

#[derive(Default)]
struct Net {
    mailboxes: HashMap<NodeId, Mailbox>,
    handlers: HashMap<NodeId, Arc<dyn ForwardHandler>>,
    /// Nodes cut off from everyone.
    isolated: HashSet<NodeId>,
    /// Directed links that drop everything: (from, to).
    cut: HashSet<(NodeId, NodeId)>,
    /// Delay added to every delivery.
    delay: Duration,
}

impl Net {
    fn blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.isolated.contains(&from)
            || self.isolated.contains(&to)
            || self.cut.contains(&(from, to))
    }
}

/// The shared network. Clone it freely; all clones see the same filters.
#[derive(Clone, Default)]
pub struct InProcessNetwork {
    net: Arc<Mutex<Net>>,
}

impl InProcessNetwork {
    /// An empty network with no filters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The transport for node `id`.
    pub fn transport(&self, id: NodeId) -> Arc<InProcessTransport> {
        Arc::new(InProcessTransport {
            id,
            net: self.net.clone(),
        })
    }

    /// Route forwarded requests for `id` to `handler` (the node's `Proposer`).
    pub fn register(&self, id: NodeId, handler: Arc<dyn ForwardHandler>) {
        self.lock().handlers.insert(id, handler);
    }

    /// Cut `id` off from every other node (both directions).
    pub fn isolate(&self, id: NodeId) {
        self.lock().isolated.insert(id);
    }

    /// Drop everything from `from` to `to` (one direction).
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.lock().cut.insert((from, to));
    }

    /// Whether traffic from `from` to `to` is dropped by a filter right now.
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.lock().blocked(from, to)
    }

    /// Remove every partition and cut.
    pub fn heal(&self) {
        let mut n = self.lock();
        n.isolated.clear();
        n.cut.clear();
    }

    /// Delay every delivery by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Forget node `id` entirely (it crashed): its messages go nowhere until it registers again.
    pub fn remove(&self, id: NodeId) {
        let mut n = self.lock();
        n.mailboxes.remove(&id);
        n.handlers.remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Net> {
        self.net.lock().expect("network lock poisoned")
    }
}

/// One node's view of an [`InProcessNetwork`].
pub struct InProcessTransport {
    id: NodeId,
    net: Arc<Mutex<Net>>,
}

impl Transport for InProcessTransport {
    fn attach(&self, mailbox: Mailbox) {
        self.net
            .lock()
            .expect("network lock poisoned")
            .mailboxes
            .insert(self.id, mailbox);
    }

    fn set_peers(&self, _members: &Members) {}

    fn send(&self, msgs: Vec<Message>) {
        let net = self.net.lock().expect("network lock poisoned");
        let own = net.mailboxes.get(&self.id).cloned();
        for m in msgs {
            let to = m.to;
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let target = (!net.blocked(self.id, to))
                .then(|| net.mailboxes.get(&to))
                .flatten();
            match (target.cloned(), own.as_ref()) {
                (Some(mb), own) => {
                    let delay = net.delay;
                    let own = own.cloned();
                    let deliver = move || {
                        mb.deliver(vec![m]);
                        if let (true, Some(own)) = (snapshot, own) {
                            own.report_snapshot(to, true);
                        }
                    };
                    if delay.is_zero() {
                        deliver();
                    } else {
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            deliver();
                        });
                    }
                }
                (None, Some(own)) => {
                    own.report_unreachable(to);
                    if snapshot {
                        own.report_snapshot(to, false);
                    }
                }
                (None, None) => {}
            }
        }
    }

    fn forward(
        &self,
        to: NodeId,
        kind: ForwardKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, ProposeError>> {
        let net = self.net.lock().expect("network lock poisoned");
        let handler = (!net.blocked(self.id, to)).then(|| net.handlers.get(&to).cloned());
        match handler.flatten() {
            Some(h) => h.handle_forward(kind, payload, timeout),
            None => {
                Box::pin(async { Err(ProposeError::Dropped("the leader is unreachable".into())) })
            }
        }
    }
}
