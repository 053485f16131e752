//! The live loop: announcements from the bus, acks from the peer, pings; and the writer that
//! sends frames (the only place a [`Frame`] becomes a WebSocket message).

use super::*;

/// Serves live announcements until the connection ends.
pub(super) async fn live(
    socket: &mut WebSocket,
    state: &AppState,
    sub: &mut Subscriber,
    rx: &mut LiveReceiver,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let cfg = &state.config;
    let mut ping_due = Instant::now() + cfg.ping_interval;
    let mut pong_deadline: Option<Instant> = None;
    let mut control = ControlFrames::new();
    loop {
        let wake = pong_deadline.unwrap_or(ping_due);
        tokio::select! {
            biased;
            _ = stop.changed() => return End::Shutdown,
            msg = socket.recv() => {
                pong_deadline = None;
                ping_due = Instant::now() + cfg.ping_interval;
                if matches!(msg, Some(Ok(Message::Ping(_) | Message::Pong(_)))) && !control.allow(cfg) {
                    return End::Flooded;
                }
                let text = match incoming(msg) {
                    Ok(Some(text)) => text,
                    Ok(None) => continue,
                    Err(end) => return end,
                };
                match parse_frame(&text) {
                    Ok(ClientFrame::Ack { update_id, status, error, .. }) => {
                        if let Err(why) = check_update_id(&update_id) {
                            return violation("invalid_frame", why);
                        }
                        let error = error.map(|mut e| {
                            if e.len() > MAX_ACK_ERROR {
                                let mut cut = MAX_ACK_ERROR;
                                while !e.is_char_boundary(cut) {
                                    cut -= 1;
                                }
                                e.truncate(cut);
                            }
                            e
                        });
                        state.log.record_ack(update_id, sub.orch_hash.clone(), status, error, now_unix());
                        state.metrics.acks.get_or_create(&StatusLabel { status: status.as_str() }).inc();
                    }
                    Ok(ClientFrame::Hello { .. }) => {
                        return violation("unexpected_hello", "hello is only allowed as the first frame");
                    }
                    Err(end) => return end,
                }
            }
            item = rx.recv() => {
                let sent = match item {
                    Ok(Live::Update(p)) => {
                        if p.update.envelope.seq <= sub.seq {
                            continue;
                        }
                        sub.seq = p.update.envelope.seq;
                        if !sub.wants(&p.update) {
                            continue;
                        }
                        deliver(socket, state, sub, p.frame.clone(), p.update_id.clone()).await
                    }
                    Ok(Live::Widened { update: p, from_percent, widen_seq }) => {
                        if widen_seq <= sub.widen_seq {
                            continue;
                        }
                        sub.widen_seq = widen_seq;
                        // An update is announced before any widening of it, so its seq has
                        // been considered by now; anything else is ignored defensively.
                        if p.update.envelope.seq > sub.seq || !sub.newly_admitted(&p.update, from_percent) {
                            continue;
                        }
                        deliver(socket, state, sub, p.frame.clone(), p.update_id.clone()).await
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(orch_hash = %sub.orch_hash, missed, "subscriber lagged; catching up from the log");
                        Box::pin(catch_up(socket, state, sub, rx)).await
                    }
                    Err(RecvError::Closed) => return End::Shutdown,
                };
                if let Err(end) = sent {
                    return end;
                }
            }
            () = sleep_until(wake) => {
                if pong_deadline.is_some() {
                    return End::Reaped;
                }
                if let Err(end) = send(socket, state, Message::Ping(Default::default())).await {
                    return end;
                }
                let now = Instant::now();
                pong_deadline = Some(now + cfg.pong_timeout);
                ping_due = now + cfg.ping_interval;
            }
        }
    }
}

/// Sends one frame, giving up after `send_timeout`.
pub(super) async fn send(
    socket: &mut WebSocket,
    state: &AppState,
    msg: Message,
) -> Result<(), End> {
    match timeout(state.config.send_timeout, socket.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if is_write_buffer_full(&e) => Err(End::QueueFull),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::SendTimeout),
    }
}

pub(super) fn is_write_buffer_full(e: &axum::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<tokio_tungstenite::tungstenite::Error>())
        .is_some_and(|t| matches!(t, tokio_tungstenite::tungstenite::Error::WriteBufferFull(_)))
}

pub(super) async fn send_frame(
    socket: &mut WebSocket,
    state: &AppState,
    frame: &ServerFrame,
) -> Result<(), End> {
    let text = serde_json::to_string(frame).expect("server frames serialise");
    send(socket, state, Message::Text(text.into())).await
}

/// A frame as a WebSocket text message: the bytes are shared, not copied.
pub(super) fn text_message(frame: Frame) -> Message {
    let text = Utf8Bytes::try_from(frame.into_bytes()).expect("frames are UTF-8");
    Message::Text(text)
}

/// Sends an update frame and records the delivery.
pub(super) async fn deliver(
    socket: &mut WebSocket,
    state: &AppState,
    sub: &Subscriber,
    frame: Frame,
    update_id: Arc<str>,
) -> Result<(), End> {
    send(socket, state, text_message(frame)).await?;
    state
        .log
        .record_delivery(update_id, sub.orch_hash.clone(), now_unix());
    // Counted after queueing, so a count observed implies the row is on its way to the log.
    state.metrics.deliveries.inc();
    Ok(())
}
