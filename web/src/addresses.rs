//! The desktop addresses a tab remembers for redialing (also offline, after a reload):
//! those the serving page named, and those other peers told it about (peer exchange),
//! kept apart so that a flood of the second kind can never push out the first.

/// Addresses the serving page named, at most.
pub const MAX_NAMED: usize = 48;
/// Addresses learned by peer exchange (other peers choose them), at most.
pub const MAX_LEARNED: usize = 16;

/// The remembered addresses, newest first in each kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressBook<A> {
    /// Named by the serving page.
    pub named: Vec<A>,
    /// Learned by peer exchange.
    pub learned: Vec<A>,
}

impl<A: PartialEq> AddressBook<A> {
    /// Remembers an address; returns whether it was new. The oldest of its kind go.
    pub fn learn(&mut self, addr: A, named: bool) -> bool {
        if self.named.contains(&addr) || (!named && self.learned.contains(&addr)) {
            return false;
        }
        let (list, limit) = if named { (&mut self.named, MAX_NAMED) } else { (&mut self.learned, MAX_LEARNED) };
        list.insert(0, addr);
        list.truncate(limit);
        true
    }

    /// Every address, named first.
    pub fn all(&self) -> impl Iterator<Item = &A> {
        self.named.iter().chain(&self.learned)
    }
}
