//! `list`, answered off the event loop. The peer publishes each list's todos after the
//! events that change them; the control socket (on its own thread) answers `list` from the
//! last publication at once, however busy the event loop is with its peers. Everything else
//! still goes through the loop.
//!
//! Freshness: a command's own change is published before its reply is sent, so `add` then
//! `list` always shows the new todo, and so is every change before the loop answers any
//! request (a `status` counting a todo is never followed by a `list` without it); changes from peers are published within the current
//! interval (at least [`MIN_INTERVAL`], and ten times the cost of the last publication, so
//! publishing stays under a tenth of the loop's time however long the list grows).
//!
//! Cost: lists are published only while someone asks for them (a `list` in the last
//! [`DEMAND`]); otherwise the publication is marked stale at the first change and the loop
//! answers, which starts publishing again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hellopears_core::todo::{self, Todo};
use tokio::sync::watch;

use crate::commands::{self, Action, Format, Reply, Request};
use crate::store::ListRecord;

/// The shortest interval between two publications of changes from peers.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// How long after a `list` the lists are kept published.
pub const DEMAND: Duration = Duration::from_secs(10);

/// What the reader and the publisher share besides the publication.
#[derive(Debug, Default)]
struct Flags {
    /// A `list` was asked since the publisher last looked.
    asked: AtomicBool,
    /// The publication holds every change (or is at most one interval behind).
    live: AtomicBool,
}

/// One list as last published.
#[derive(Debug, Clone)]
struct Published {
    record: ListRecord,
    topic: String,
    todos: Arc<Vec<Todo>>,
}

/// Answers `list` from the last publication.
#[derive(Debug, Clone)]
pub struct Reader {
    rx: watch::Receiver<Vec<Published>>,
    flags: Arc<Flags>,
}

impl Reader {
    /// The reply to `request` if it is a `list` of a published list; `None` sends it to
    /// the event loop (other requests, and lists not published yet or not found, whose
    /// errors the loop words).
    pub fn answer(&self, request: &Request) -> Option<Reply> {
        let Action::List(format) = request.action else { return None };
        // What a UI shows can change at any moment: the loop answers for it.
        if request.list.as_deref() == Some(hellopears_core::control::SHOWN_LIST) {
            return None;
        }
        self.flags.asked.store(true, Ordering::Relaxed);
        if !self.flags.live.load(Ordering::Acquire) {
            return None;
        }
        let lists = self.rx.borrow();
        let records: Vec<ListRecord> = lists.iter().map(|list| list.record.clone()).collect();
        let index = crate::lists::served(&records, 0, &request.topic, request.list.as_deref()).ok()?;
        let list = lists.get(index)?;
        Some(Ok(match format {
            Format::Json => format!("{}\n", serde_json::to_string(&*list.todos).unwrap_or_else(|_| "[]".into())),
            Format::Text => commands::list_text(&list.topic, &list.todos),
        }))
    }
}

/// The event loop's side: which lists changed, and when to publish them.
#[derive(Debug)]
pub struct Publisher {
    tx: watch::Sender<Vec<Published>>,
    flags: Arc<Flags>,
    dirty: Vec<bool>,
    at: Instant,
    interval: Duration,
    /// Lists are published until then.
    wanted_until: Option<Instant>,
}

/// A publisher and its reader.
pub fn channel() -> (Publisher, Reader) {
    let (tx, rx) = watch::channel(Vec::new());
    let flags = Arc::new(Flags::default());
    let publisher = Publisher {
        tx,
        flags: flags.clone(),
        dirty: Vec::new(),
        at: Instant::now(),
        interval: MIN_INTERVAL,
        wanted_until: None,
    };
    (publisher, Reader { rx, flags })
}

impl Publisher {
    /// List `index` changed.
    pub fn mark(&mut self, index: usize) {
        if self.dirty.len() <= index {
            self.dirty.resize(index + 1, true);
        }
        self.dirty[index] = true;
    }

    /// When the next publication is due, if anything waits for one.
    pub fn due(&self) -> Option<Instant> {
        let wanted = self.wanted_until.is_some_and(|until| Instant::now() < until);
        (wanted && self.dirty.iter().any(|dirty| *dirty)).then_some(self.at + self.interval)
    }

    /// Publishes the changed lists if someone reads them and the interval passed (or at
    /// once with `now`).
    pub fn publish<'a>(
        &mut self,
        lists: impl Iterator<Item = (&'a ListRecord, &'a hellopears_core::db::Db)>,
        now: bool,
    ) {
        let lists: Vec<_> = lists.collect();
        if self.dirty.len() < lists.len() {
            self.dirty.resize(lists.len(), true);
        }
        if !self.dirty.iter().any(|dirty| *dirty) {
            return;
        }
        if self.flags.asked.swap(false, Ordering::Relaxed) {
            self.wanted_until = Some(Instant::now() + DEMAND);
        }
        if self.wanted_until.is_none_or(|until| Instant::now() >= until) {
            // Nobody reads them: the loop answers until someone does again.
            self.flags.live.store(false, Ordering::Release);
            return;
        }
        if !now && self.at.elapsed() < self.interval && self.flags.live.load(Ordering::Relaxed) {
            return;
        }
        let started = Instant::now();
        let dirty = std::mem::take(&mut self.dirty);
        self.tx.send_modify(|published| {
            published.truncate(lists.len());
            for (index, (record, db)) in lists.iter().enumerate() {
                let fresh = Published {
                    record: (*record).clone(),
                    topic: record.topic().name().to_owned(),
                    todos: Arc::new(todo::list(db)),
                };
                match published.get_mut(index) {
                    Some(old) if dirty.get(index).copied().unwrap_or(true) => *old = fresh,
                    Some(_) => {}
                    None => published.push(fresh),
                }
            }
        });
        self.dirty = vec![false; lists.len()];
        self.flags.live.store(true, Ordering::Release);
        self.at = Instant::now();
        self.interval = MIN_INTERVAL.max(started.elapsed() * 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hellopears_core::Replica;
    use hellopears_core::keys::Keypair;
    use hellopears_core::topic::Topic;

    fn todo_list() -> (ListRecord, Replica) {
        let replica = Replica::new(Topic::from_name("todo"), Keypair::from_secret([7; 32]));
        (ListRecord::public("todo"), replica)
    }

    fn request(list: Option<&str>) -> Request {
        Request { topic: String::new(), list: list.map(Into::into), action: Action::List(Format::Json) }
    }

    #[test]
    fn a_list_is_answered_from_the_last_publication_and_other_requests_go_to_the_loop() {
        let (mut publisher, reader) = channel();
        let (record, mut replica) = todo_list();
        assert_eq!(reader.answer(&request(None)), None, "nothing published yet: the loop answers");
        publisher.publish([(&record, replica.db())].into_iter(), false);
        assert_eq!(reader.answer(&request(None)), Some(Ok("[]\n".to_owned())), "published once asked");
        replica.todos().add("milk", 1).expect("add");
        publisher.mark(0);
        assert!(publisher.due().is_some());
        publisher.publish([(&record, replica.db())].into_iter(), true);
        let listed = reader.answer(&request(None)).expect("answered").expect("ok");
        assert!(listed.contains("milk"), "{listed}");
        assert_eq!(reader.answer(&request(Some("nothing-like-it"))), None, "unknown lists: the loop words the error");
        let status = Request { action: Action::Status(Format::Json), ..request(None) };
        assert_eq!(reader.answer(&status), None);
    }

    #[test]
    fn changes_from_peers_wait_for_the_interval_and_commands_do_not() {
        let (mut publisher, reader) = channel();
        let (record, mut replica) = todo_list();
        assert_eq!(reader.answer(&request(None)), None);
        publisher.publish([(&record, replica.db())].into_iter(), true);
        replica.todos().add("eggs", 1).expect("add");
        publisher.mark(0);
        publisher.publish([(&record, replica.db())].into_iter(), false);
        assert_eq!(reader.answer(&request(None)), Some(Ok("[]\n".to_owned())), "within the interval");
        publisher.publish([(&record, replica.db())].into_iter(), true);
        assert!(reader.answer(&request(None)).is_some_and(|r| r.is_ok_and(|text| text.contains("eggs"))));
        assert_eq!(publisher.due(), None, "nothing left to publish");
    }
}

#[cfg(test)]
mod demand {
    use super::*;

    #[test]
    fn lists_nobody_reads_are_not_published_and_the_loop_answers_for_them() {
        let (mut publisher, reader) = channel();
        let record = ListRecord::public("todo");
        let db = hellopears_core::todo::view();
        publisher.publish([(&record, &db)].into_iter(), true);
        assert_eq!(publisher.due(), None, "nobody asked: nothing is due");
        let request = Request { topic: String::new(), list: None, action: Action::List(Format::Text) };
        assert_eq!(reader.answer(&request), None, "not published: the loop answers");
        publisher.publish([(&record, &db)].into_iter(), false);
        assert!(reader.answer(&request).is_some(), "asked once: published from then on");
        // DEMAND passes with no `list`.
        publisher.flags.asked.store(false, Ordering::Relaxed);
        publisher.wanted_until = Some(Instant::now());
        publisher.mark(0);
        publisher.publish([(&record, &db)].into_iter(), true);
        assert_eq!(reader.answer(&request), None, "a change after the demand ended: stale, so the loop answers");
    }
}
