//! The view of one list: the document DB, and for a private list its membership log and
//! content keys (see [`crate::access`] for the scheme).
//!
//! Every entry of a private list is an [`Envelope`]: membership operations under the
//! membership key, todo operations under a content key. Who may do what is decided by the
//! membership state *at the entry's position in the linear order*, so every replica decides
//! alike: an operation counts only if its writer was admitted before it (and not removed
//! before it) with a role that allows it. Membership operations touch everything (a reorg
//! across one redoes all after it); todo operations keep the DB's per-document scopes, which
//! stays deterministic because membership is recorded as position intervals.
//!
//! The content keys this device holds are local knowledge, not view state: they only grow,
//! and when a key arrives that entries before it already named (this device was just
//! admitted), the view asks the base to rebuild from that key's introduction.

use serde::{Deserialize, Serialize};

use crate::access::{AccessError, ContentKey, Envelope, EnvelopeKind, ListKeys, Role, Sealed, check_join_proof};
use crate::base::{Apply, ApplyContext, Position};
use crate::db::{Db, DbOp, DbUndo};
use crate::keys::{Keypair, WriterId};

/// The position before every entry (content key 0 is introduced there).
pub const ORIGIN: Position = Position { clock: 0, writer: WriterId([0; 32]), seq: 0 };

/// A membership operation (what the membership log holds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberOp {
    /// A writer creates an invite: its public key, the role it grants, its expiry.
    Invite {
        /// The invite's public key ([`crate::access::Invite::key`]).
        key: WriterId,
        /// The role it grants (never owner).
        role: Role,
        /// Expiry, ms since the Unix epoch.
        expires: u64,
    },
    /// A writer admits a device that proved an invite.
    Admit {
        /// The invite used.
        invite: WriterId,
        /// The joining device's writer key.
        device: WriterId,
        /// Its display name.
        name: String,
        /// When the admitting peer checked the invite, ms since the Unix epoch.
        at: u64,
        /// The joiner's proof ([`crate::access::Invite::prove`]).
        proof: Vec<u8>,
        /// Every content key, sealed to the device (none for a blind device).
        keys: Vec<Sealed>,
    },
    /// A writer removes a member and rotates the content key.
    Remove {
        /// The removed device.
        device: WriterId,
        /// The id of the new content key.
        key_id: [u8; 8],
        /// The new key, sealed to each remaining reader.
        keys: Vec<(WriterId, Sealed)>,
    },
    /// A member sets its display name.
    Name {
        /// The name.
        name: String,
    },
}

impl MemberOp {
    /// Encoded form (inside the envelope).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// One member as the membership log has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The device's writer key.
    pub device: WriterId,
    /// Its role.
    pub role: Role,
    /// Its display name (empty until set).
    pub name: String,
    /// Where it was admitted.
    pub since: Position,
    /// Where it was removed, if it was.
    pub until: Option<Position>,
    /// Who admitted it.
    pub invited_by: Option<WriterId>,
}

impl Member {
    fn active_at(&self, at: &Position) -> bool {
        self.since < *at && self.until.is_none_or(|until| *at < until)
    }

    /// Whether the member is still in the list.
    pub fn is_active(&self) -> bool {
        self.until.is_none()
    }
}

#[derive(Clone, Debug)]
struct InviteRecord {
    key: WriterId,
    role: Role,
    expires: u64,
    since: Position,
    used: bool,
}

/// The membership state (undone and redone with the order).
#[derive(Clone, Debug, Default)]
pub struct Membership {
    members: Vec<Member>,
    invites: Vec<InviteRecord>,
    /// The ids of content keys chosen at removals, in order, with where. Content key 0
    /// (from the root secret) is the one held key not listed: it precedes every entry.
    key_ids: Vec<([u8; 8], Position)>,
}

impl Membership {
    /// Every member, removed ones included.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member record of a device (its latest admission).
    pub fn member(&self, device: &WriterId) -> Option<&Member> {
        self.members.iter().rev().find(|member| member.device == *device)
    }

    /// A device's current role, if it is an active member.
    pub fn role(&self, device: &WriterId) -> Option<Role> {
        self.member(device).filter(|member| member.is_active()).map(|member| member.role)
    }

    fn role_at(&self, device: &WriterId, at: &Position) -> Option<Role> {
        self.members.iter().find(|member| member.device == *device && member.active_at(at)).map(|member| member.role)
    }

    /// The state of an invite: `Ok(role)` when it can still admit a device at `now`.
    pub fn check_invite(&self, key: &WriterId, now: u64) -> Result<Role, AccessError> {
        let invite = self.invites.iter().find(|invite| invite.key == *key).ok_or(AccessError::UnknownInvite)?;
        if invite.used {
            return Err(AccessError::InviteUsed);
        }
        if now > invite.expires {
            return Err(AccessError::InviteExpired);
        }
        Ok(invite.role)
    }
}

/// An operation of a list's view.
#[derive(Debug)]
pub enum ListOp {
    /// A document operation (decrypted, for a private list).
    Db(DbOp),
    /// A membership operation.
    Member(MemberOp),
    /// A todo operation under a key not held when it was decoded: tried again when applied.
    Locked(Envelope),
}

/// What undoes a [`ListOp`].
#[derive(Debug)]
pub enum ListUndo {
    /// A document operation's undo.
    Db(DbUndo),
    /// The membership state before a membership operation.
    Members(Box<Membership>),
    /// Nothing was changed.
    Nothing,
}

/// What a private list's view holds beyond the DB.
#[derive(Debug)]
struct Private {
    keys: ListKeys,
    device: Keypair,
    membership: Membership,
    /// Content keys this device holds (only grows).
    keyring: Vec<ContentKey>,
    /// Where to rebuild from, after learning keys that earlier entries named.
    rebuild: Option<Position>,
    /// Operations refused since the last call (for the UI and the logs).
    refused: Vec<(WriterId, u64, AccessError)>,
}

/// The view of a list: the document DB, and for private lists the membership.
#[derive(Debug)]
pub struct ListView {
    db: Db,
    private: Option<Box<Private>>,
}

impl ListView {
    /// The view of a public topic: the DB alone.
    pub fn public(db: Db) -> Self {
        Self { db, private: None }
    }

    /// The view of a private list, read by `device`; `first_key` is content key 0 when this
    /// device holds the root secret.
    pub fn private(db: Db, keys: ListKeys, device: Keypair, first_key: Option<[u8; 32]>) -> Self {
        let owner = Member {
            device: keys.owner,
            role: Role::Owner,
            name: String::new(),
            since: ORIGIN,
            until: None,
            invited_by: None,
        };
        let membership = Membership { members: vec![owner], ..Membership::default() };
        let keyring = first_key.map(ContentKey::new).into_iter().collect();
        Self {
            db,
            private: Some(Box::new(Private { keys, device, membership, keyring, rebuild: None, refused: Vec::new() })),
        }
    }

    /// The document DB.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The document DB, for local settings.
    pub fn db_mut(&mut self) -> &mut Db {
        &mut self.db
    }

    /// The list keys, for a private list.
    pub fn list_keys(&self) -> Option<&ListKeys> {
        self.private.as_ref().map(|private| &private.keys)
    }

    /// The membership, for a private list.
    pub fn membership(&self) -> Option<&Membership> {
        self.private.as_ref().map(|private| &private.membership)
    }

    /// This device's role (`None` on a public topic, where everyone writes).
    pub fn role(&self) -> Option<Role> {
        let private = self.private.as_ref()?;
        private.membership.role(&private.device.id())
    }

    /// Operations every replica refused since the last call.
    pub fn take_refused(&mut self) -> Vec<(WriterId, u64, AccessError)> {
        self.private.as_mut().map(|private| std::mem::take(&mut private.refused)).unwrap_or_default()
    }

    /// The payload for a todo operation written as entry `seq` of the local writer: plain on
    /// a public topic, sealed under the newest content key this device holds otherwise.
    pub fn seal_op(&self, seq: u64, plaintext: &[u8]) -> Result<Vec<u8>, AccessError> {
        let Some(private) = &self.private else { return Ok(plaintext.to_vec()) };
        let device = private.device.id();
        match private.membership.role(&device) {
            Some(role) if role.can_write() => {}
            Some(role) => return Err(AccessError::CannotWrite(role.label())),
            None => return Err(AccessError::NotAMember),
        }
        let key = private.current_key().ok_or_else(|| AccessError::UnknownKey("(none)".into()))?;
        Ok(key.seal(&private.keys.id, &device, seq, plaintext))
    }

    /// The payload for a membership operation written as entry `seq` of the local writer.
    pub fn seal_member_op(&self, seq: u64, op: &MemberOp) -> Result<Vec<u8>, AccessError> {
        let Some(private) = &self.private else { return Err(AccessError::NotAllowed("a public topic".into())) };
        let device = private.device.id();
        match (op, private.membership.role(&device)) {
            (_, None) => return Err(AccessError::NotAMember),
            // Names are for the members who read the list: under the content key.
            (MemberOp::Name { .. }, Some(role)) => {
                if !role.can_read() {
                    return Err(AccessError::CannotWrite(role.label()));
                }
                let key = private.current_key().ok_or_else(|| AccessError::UnknownKey("(none)".into()))?;
                return Ok(key.seal_name(&private.keys.id, &device, seq, &op.encode()));
            }
            (_, Some(role)) if !role.can_write() => return Err(AccessError::CannotWrite(role.label())),
            _ => {}
        }
        Ok(private.keys.seal_membership(&device, seq, &op.encode()))
    }

    /// The admission of a joiner that proved `invite` at `now`: checks everything the
    /// replicas will check, and seals every content key to the new device.
    pub fn admission(
        &self,
        invite: WriterId,
        device: WriterId,
        name: String,
        proof: [u8; 64],
        now: u64,
    ) -> Result<MemberOp, AccessError> {
        let Some(private) = &self.private else { return Err(AccessError::NotAllowed("a public topic".into())) };
        if private.membership.role(&device).is_some() {
            // A repeated request of a device we admitted (it has not synced its admission
            // yet): nothing to do, nothing to refuse.
            check_join_proof(&invite, &private.keys.id, &device, &name, &proof)?;
            return Err(AccessError::AlreadyMember);
        }
        let role = private.membership.check_invite(&invite, now)?;
        check_join_proof(&invite, &private.keys.id, &device, &name, &proof)?;
        let mut keys = Vec::new();
        if role.can_read() {
            for key in &private.keyring {
                keys.push(Sealed::seal(&private.device, &device, key, &private.keys.id)?);
            }
        }
        Ok(MemberOp::Admit { invite, device, name, at: now, proof: proof.to_vec(), keys })
    }

    /// The removal of `device`, with a new content key sealed to every remaining reader.
    pub fn removal(&self, device: WriterId) -> Result<MemberOp, AccessError> {
        let Some(private) = &self.private else { return Err(AccessError::NotAllowed("a public topic".into())) };
        let member = private.membership.role(&device).ok_or_else(|| AccessError::NotAllowed(device.short()))?;
        if member == Role::Owner {
            return Err(AccessError::NotAllowed("the owner cannot be removed".into()));
        }
        let current = private.current_key().ok_or_else(|| AccessError::UnknownKey("(none)".into()))?;
        let next = current.rotate(&private.device, &private.keys.id, &device);
        let mut keys = Vec::new();
        for member in private.membership.members.iter().filter(|m| m.is_active() && m.device != device) {
            if member.role.can_read() {
                keys.push((member.device, Sealed::seal(&private.device, &member.device, &next, &private.keys.id)?));
            }
        }
        Ok(MemberOp::Remove { device, key_id: next.id, keys })
    }
}

impl Private {
    /// The newest content key (in the order) that this device holds.
    fn current_key(&self) -> Option<&ContentKey> {
        self.membership
            .key_ids
            .iter()
            .rev()
            .find_map(|(id, _)| self.keyring.iter().find(|key| key.id == *id))
            .or_else(|| self.first_key())
    }

    /// Content key 0: the held key no removal introduced.
    fn first_key(&self) -> Option<&ContentKey> {
        self.keyring.iter().find(|key| !self.membership.key_ids.iter().any(|(id, _)| *id == key.id))
    }

    fn learn(&mut self, key: ContentKey, introduced: Position, now: Position) {
        if self.keyring.iter().any(|held| held.id == key.id) {
            return;
        }
        self.keyring.push(key);
        if introduced < now {
            self.rebuild = Some(self.rebuild.map_or(introduced, |at| at.min(introduced)));
        }
    }

    /// Decrypts a todo operation at `at`, if its key was introduced before it and is held.
    fn open_content(&self, envelope: &Envelope, ctx: &ApplyContext) -> Result<Vec<u8>, AccessError> {
        let at = position(ctx);
        // A key chosen at a removal counts only after it; key 0 counts from the start.
        let introduced = self.membership.key_ids.iter().find(|(id, _)| *id == envelope.key_id);
        if introduced.is_some_and(|(_, since)| *since >= at) {
            return Err(AccessError::UnknownKey(hex::encode(envelope.key_id)));
        }
        let key = self
            .keyring
            .iter()
            .find(|key| key.id == envelope.key_id)
            .ok_or_else(|| AccessError::UnknownKey(hex::encode(envelope.key_id)))?;
        key.open(envelope, &self.keys.id, &ctx.writer, ctx.seq)
    }

    /// Applies a membership operation; `Err` leaves the state as it was.
    fn apply_member(&mut self, op: MemberOp, ctx: &ApplyContext) -> Result<(), AccessError> {
        let at = position(ctx);
        let role = self.membership.role_at(&ctx.writer, &at);
        // Everything but naming oneself is for writers.
        if !matches!(op, MemberOp::Name { .. }) && !role.is_some_and(Role::can_write) {
            return Err(AccessError::NotAllowed(ctx.writer.short()));
        }
        match op {
            MemberOp::Invite { key, role, expires } => {
                if role == Role::Owner || self.membership.invites.iter().any(|invite| invite.key == key) {
                    return Err(AccessError::NotAllowed("that invite".into()));
                }
                self.membership.invites.push(InviteRecord { key, role, expires, since: at, used: false });
            }
            MemberOp::Admit { invite, device, name, at: checked_at, proof, keys } => {
                let record = self
                    .membership
                    .invites
                    .iter()
                    .position(|record| record.key == invite && record.since < at)
                    .ok_or(AccessError::UnknownInvite)?;
                let granted = self.membership.check_invite(&invite, checked_at)?;
                let proof: [u8; 64] = proof.as_slice().try_into().map_err(|_| AccessError::BadInviteProof)?;
                check_join_proof(&invite, &self.keys.id, &device, &name, &proof)?;
                if self.membership.role_at(&device, &at).is_some() {
                    return Err(AccessError::NotAllowed(format!("{} twice", device.short())));
                }
                self.membership.invites[record].used = true;
                self.membership.members.push(Member {
                    device,
                    role: granted,
                    name: crate::limits::clip_name(&name),
                    since: at,
                    until: None,
                    invited_by: Some(ctx.writer),
                });
                if device == self.device.id() {
                    let introduced: Vec<([u8; 8], Position)> = self.membership.key_ids.clone();
                    for sealed in keys {
                        if let Ok(key) = sealed.open(&self.device, &self.keys.id) {
                            let since = introduced.iter().find(|(id, _)| *id == key.id).map_or(ORIGIN, |(_, p)| *p);
                            self.learn(key, since, at);
                        }
                    }
                }
            }
            MemberOp::Remove { device, key_id, keys } => {
                let index = self
                    .membership
                    .members
                    .iter()
                    .position(|member| member.device == device && member.active_at(&at) && member.role != Role::Owner)
                    .ok_or_else(|| AccessError::NotAllowed(format!("removing {}", device.short())))?;
                self.membership.members[index].until = Some(at);
                if !self.membership.key_ids.iter().any(|(id, _)| *id == key_id) {
                    self.membership.key_ids.push((key_id, at));
                }
                let own = self.device.id();
                if let Some((_, sealed)) = keys.iter().find(|(recipient, _)| *recipient == own)
                    && let Ok(key) = sealed.open(&self.device, &self.keys.id)
                    && key.id == key_id
                {
                    self.learn(key, at, at);
                }
            }
            MemberOp::Name { name } => {
                if role.is_none() {
                    return Err(AccessError::NotAllowed(ctx.writer.short()));
                }
                let member = self
                    .membership
                    .members
                    .iter_mut()
                    .rev()
                    .find(|member| member.device == ctx.writer && member.active_at(&at))
                    .ok_or_else(|| AccessError::NotAllowed(ctx.writer.short()))?;
                member.name = crate::limits::clip_name(&name);
            }
        }
        Ok(())
    }
}

/// A display name operation from a name envelope (nothing else may come in one).
fn name_op(plain: &[u8]) -> Option<MemberOp> {
    match postcard::from_bytes::<MemberOp>(plain) {
        Ok(op @ MemberOp::Name { .. }) => Some(op),
        _ => None,
    }
}

fn position(ctx: &ApplyContext) -> Position {
    Position { clock: ctx.clock, writer: ctx.writer, seq: ctx.seq }
}

impl Apply for ListView {
    type Op = ListOp;
    type Undo = ListUndo;

    fn decode_op(&mut self, payload: &[u8], ctx: &ApplyContext) -> Option<ListOp> {
        let Some(private) = &mut self.private else { return self.db.decode_op(payload, ctx).map(ListOp::Db) };
        let envelope = match Envelope::parse(payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                private.refused.push((ctx.writer, ctx.seq, error));
                return None;
            }
        };
        match envelope.kind {
            EnvelopeKind::Membership => match private.keys.open_membership(&envelope, &ctx.writer, ctx.seq) {
                Ok(plain) => match postcard::from_bytes::<MemberOp>(&plain) {
                    Ok(op) => Some(ListOp::Member(op)),
                    Err(_) => {
                        private.refused.push((ctx.writer, ctx.seq, AccessError::Malformed));
                        None
                    }
                },
                Err(error) => {
                    private.refused.push((ctx.writer, ctx.seq, error));
                    None
                }
            },
            EnvelopeKind::Content => match private.open_content(&envelope, ctx) {
                Ok(plain) => self.db.decode_op(&plain, ctx).map(ListOp::Db),
                Err(_) => Some(ListOp::Locked(envelope)),
            },
            EnvelopeKind::Name => match private.open_content(&envelope, ctx) {
                Ok(plain) => name_op(&plain).map(ListOp::Member),
                Err(_) => Some(ListOp::Locked(envelope)),
            },
        }
    }

    fn op_key(&self, op: &ListOp) -> Option<u64> {
        match op {
            ListOp::Db(op) => self.db.op_key(op),
            ListOp::Member(_) | ListOp::Locked(_) => None,
        }
    }

    fn apply(&mut self, op: ListOp, ctx: &ApplyContext) -> ListUndo {
        let op = match op {
            ListOp::Locked(envelope) => {
                let Some(private) = &self.private else { return ListUndo::Nothing };
                let opened = private.open_content(&envelope, ctx);
                let decoded = match (&opened, envelope.kind) {
                    (Ok(plain), EnvelopeKind::Name) => name_op(plain).map(ListOp::Member),
                    (Ok(plain), _) => self.db.decode_op(plain, ctx).map(ListOp::Db),
                    (Err(_), _) => None,
                };
                match opened {
                    Ok(_) => match decoded {
                        Some(op) => op,
                        None => return ListUndo::Nothing,
                    },
                    // Blind peers, and keys not (yet) held: nothing to apply.
                    Err(_) => return ListUndo::Nothing,
                }
            }
            op => op,
        };
        match op {
            ListOp::Db(op) => {
                if let Some(private) = &mut self.private {
                    let at = position(ctx);
                    if !private.membership.role_at(&ctx.writer, &at).is_some_and(Role::can_write) {
                        private.refused.push((ctx.writer, ctx.seq, AccessError::NotAllowed(ctx.writer.short())));
                        return ListUndo::Nothing;
                    }
                }
                ListUndo::Db(self.db.apply(op, ctx))
            }
            ListOp::Member(op) => {
                let Some(private) = &mut self.private else { return ListUndo::Nothing };
                let before = Box::new(private.membership.clone());
                match private.apply_member(op, ctx) {
                    Ok(()) => ListUndo::Members(before),
                    Err(error) => {
                        private.refused.push((ctx.writer, ctx.seq, error));
                        ListUndo::Nothing
                    }
                }
            }
            ListOp::Locked(_) => ListUndo::Nothing,
        }
    }

    fn undo(&mut self, undo: ListUndo) {
        match undo {
            ListUndo::Db(undo) => self.db.undo(undo),
            ListUndo::Members(before) => {
                if let Some(private) = &mut self.private {
                    private.membership = *before;
                }
            }
            ListUndo::Nothing => {}
        }
    }

    fn begin_update(&mut self) {
        self.db.begin_update();
    }

    fn end_update(&mut self) {
        self.db.end_update();
    }

    fn take_rebuild(&mut self) -> Option<Position> {
        self.private.as_mut().and_then(|private| private.rebuild.take())
    }
}
