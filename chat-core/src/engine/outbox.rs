//! The queue of outputs waiting to be polled.
//!
//! Outputs are queued (never handed out mid-handler), so two inputs in a row stay
//! correct even if the caller has not drained the first one's outputs.

use std::collections::VecDeque;
use std::sync::Arc;

use smallvec::SmallVec;

use super::io::{Output, Recipients, StoreOp, StoreRequest, Ticket};
use crate::cluster::ClusterOp;
use crate::ids::ConnId;
use crate::protocol::{ServerEvent, WireError};
use crate::transport::CloseCode;

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: VecDeque<Output>,
    next_ticket: u64,
}

impl Outbox {
    pub(crate) fn pop(&mut self) -> Option<Output> {
        self.queue.pop_front()
    }

    pub(crate) fn deliver(&mut self, to: Recipients, event: ServerEvent) {
        self.queue.push_back(Output::Deliver {
            to,
            event: Arc::new(event),
        });
    }

    pub(crate) fn send(&mut self, conn: ConnId, event: ServerEvent) {
        self.deliver(Recipients::One(conn), event);
    }

    pub(crate) fn send_list(&mut self, conns: &[ConnId], event: ServerEvent) {
        if !conns.is_empty() {
            self.deliver(Recipients::List(SmallVec::from_slice(conns)), event);
        }
    }

    pub(crate) fn error(&mut self, conn: ConnId, error: WireError) {
        self.send(conn, ServerEvent::Error(error));
    }

    pub(crate) fn close(&mut self, conn: ConnId, code: CloseCode, reason: &'static str) {
        self.queue.push_back(Output::Close { conn, code, reason });
    }

    /// A fresh ticket (store and cluster round trips share the counter).
    pub(crate) fn ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        Ticket(self.next_ticket)
    }

    /// Queues a store request and returns its ticket.
    pub(crate) fn store(&mut self, op: StoreOp) -> Ticket {
        let ticket = self.ticket();
        self.queue
            .push_back(Output::Store(StoreRequest { ticket, op }));
        ticket
    }

    /// Queues an op for the cluster bus.
    pub(crate) fn cluster(&mut self, op: ClusterOp) {
        self.queue.push_back(Output::Cluster(op));
    }
}
