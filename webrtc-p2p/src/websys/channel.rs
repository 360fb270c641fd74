//! A browser `RTCDataChannel` as bytes in and out (`AsyncRead` + `AsyncWrite`): messages
//! are queued as they arrive, writes wait while the channel's send buffer is full, and a
//! closed channel reads as the end. `libp2p_webrtc_utils::Stream` frames libp2p streams on it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures::{AsyncRead, AsyncWrite};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;
use web_sys::{Event, MessageEvent, RtcDataChannel, RtcDataChannelState, RtcDataChannelType};

/// Bytes a channel may hold unread before the remote is taken for a flood.
const MAX_UNREAD: usize = 1 << 20;
/// Bytes we let the browser buffer for sending before writes wait.
const MAX_BUFFERED: u32 = 256 * 1024;

#[derive(Default)]
struct Shared {
    unread: VecDeque<Vec<u8>>,
    unread_len: usize,
    overloaded: bool,
    closed: bool,
    opened: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    open_waker: Option<Waker>,
}

impl Shared {
    fn wake_all(&mut self) {
        for waker in [self.read_waker.take(), self.write_waker.take(), self.open_waker.take()].into_iter().flatten() {
            waker.wake();
        }
    }
}

struct Callbacks {
    channel: RtcDataChannel,
    _open: Closure<dyn FnMut(Event)>,
    _message: Closure<dyn FnMut(MessageEvent)>,
    _close: Closure<dyn FnMut(Event)>,
    _low: Closure<dyn FnMut(Event)>,
}

impl Drop for Callbacks {
    /// The channel outlives us in the browser: unhook our callbacks before they go.
    fn drop(&mut self) {
        self.channel.set_onopen(None);
        self.channel.set_onmessage(None);
        self.channel.set_onclose(None);
        self.channel.set_onbufferedamountlow(None);
    }
}

/// One data channel. Clones share the channel (the framing keeps one for its drop listener).
#[derive(Clone)]
pub(crate) struct DataChannelIo {
    channel: RtcDataChannel,
    shared: Rc<RefCell<Shared>>,
    _callbacks: Rc<Callbacks>,
}

impl std::fmt::Debug for DataChannelIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataChannelIo").field("label", &self.channel.label()).finish_non_exhaustive()
    }
}

impl DataChannelIo {
    pub(crate) fn new(channel: RtcDataChannel) -> Self {
        channel.set_binary_type(RtcDataChannelType::Arraybuffer);
        channel.set_buffered_amount_low_threshold(MAX_BUFFERED / 2);
        let shared = Rc::new(RefCell::new(Shared {
            opened: channel.ready_state() == RtcDataChannelState::Open,
            ..Shared::default()
        }));
        let open = {
            let shared = shared.clone();
            Closure::<dyn FnMut(Event)>::new(move |_| {
                let mut shared = shared.borrow_mut();
                shared.opened = true;
                shared.wake_all();
            })
        };
        let message = {
            let shared = shared.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                let Ok(buffer) = event.data().dyn_into::<js_sys::ArrayBuffer>() else { return };
                let bytes = js_sys::Uint8Array::new(&buffer).to_vec();
                let mut shared = shared.borrow_mut();
                if shared.unread_len + bytes.len() > MAX_UNREAD {
                    shared.overloaded = true;
                } else {
                    shared.unread_len += bytes.len();
                    shared.unread.push_back(bytes);
                }
                if let Some(waker) = shared.read_waker.take() {
                    waker.wake();
                }
            })
        };
        let close = {
            let shared = shared.clone();
            Closure::<dyn FnMut(Event)>::new(move |_| {
                let mut shared = shared.borrow_mut();
                shared.closed = true;
                shared.wake_all();
            })
        };
        let low = {
            let shared = shared.clone();
            Closure::<dyn FnMut(Event)>::new(move |_| {
                if let Some(waker) = shared.borrow_mut().write_waker.take() {
                    waker.wake();
                }
            })
        };
        channel.set_onopen(Some(open.as_ref().unchecked_ref()));
        channel.set_onmessage(Some(message.as_ref().unchecked_ref()));
        channel.set_onclose(Some(close.as_ref().unchecked_ref()));
        channel.set_onbufferedamountlow(Some(low.as_ref().unchecked_ref()));
        let callbacks =
            Callbacks { channel: channel.clone(), _open: open, _message: message, _close: close, _low: low };
        Self { channel, shared, _callbacks: Rc::new(callbacks) }
    }

    /// Waits until the channel is open.
    pub(crate) fn poll_open(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = self.shared.borrow_mut();
        if shared.closed || self.channel.ready_state() == RtcDataChannelState::Closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if shared.opened || self.channel.ready_state() == RtcDataChannelState::Open {
            shared.opened = true;
            return Poll::Ready(Ok(()));
        }
        shared.open_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncRead for DataChannelIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut shared = self.shared.borrow_mut();
        if shared.overloaded {
            return Poll::Ready(Err(io::Error::other("the remote sent more than we read")));
        }
        if let Some(front) = shared.unread.front_mut() {
            let n = front.len().min(buf.len());
            buf[..n].copy_from_slice(&front[..n]);
            if n == front.len() {
                shared.unread.pop_front();
            } else {
                front.drain(..n);
            }
            shared.unread_len -= n;
            return Poll::Ready(Ok(n));
        }
        if shared.closed {
            return Poll::Ready(Ok(0));
        }
        shared.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for DataChannelIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.poll_open(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|result| result.map(|()| 0)),
        }
        if self.channel.buffered_amount() >= MAX_BUFFERED {
            self.shared.borrow_mut().write_waker = Some(cx.waker().clone());
            // The event may have fired between the check and the registration.
            if self.channel.buffered_amount() >= MAX_BUFFERED {
                return Poll::Pending;
            }
        }
        let n = buf.len().min(libp2p_webrtc_utils::MAX_MSG_LEN);
        self.channel.send_with_u8_array(&buf[..n]).map_err(|error| io::Error::other(format!("{error:?}")))?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The browser sends what it buffered on its own; wait only while it is overfull.
        if self.channel.buffered_amount() >= MAX_BUFFERED {
            self.shared.borrow_mut().write_waker = Some(cx.waker().clone());
            if self.channel.buffered_amount() >= MAX_BUFFERED {
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.channel.close();
        Poll::Ready(Ok(()))
    }
}
