//! What a subscriber reads from the log: the replay after its hello, and the catch-up when it
//! lagged behind the live channel.

use super::*;

/// What a subscriber at `last_seq` missed, as of `pos`: updates widened since it saw them
/// (that now admit it and that it has not acked), then every later update that targets it.
pub(super) async fn read_replay(
    state: &AppState,
    sub: &Subscriber,
    last_seq: u64,
    pos: Position,
) -> Result<Vec<StoredUpdate>, crate::core::distributor::Error> {
    let below = last_seq.min(pos.seq);
    let check_widened = state.bus.min_widened_seq() <= below && pos.widen_seq > 0;
    if !check_widened && last_seq >= pos.seq {
        return Ok(Vec::new());
    }
    let _slot = state.read_slot().await?;
    let mut out = Vec::new();
    if check_widened {
        out.extend(
            state
                .log
                .widened_unacked(below, pos.widen_seq, &sub.orch_hash)
                .await?
                .into_iter()
                .filter(|u| sub.newly_admitted(u, u.initial_percent)),
        );
    }
    let who = sub.snapshot();
    let keep = Box::new(move |u: &StoredUpdate| who.wants(u));
    out.extend(
        state
            .log
            .updates_between(last_seq, pos.seq, pos.widen_seq, keep)
            .await?,
    );
    Ok(out)
}

/// Re-joins the live channel and sends, from the log, what the lag skipped: widenings of
/// updates already considered that newly admit this subscriber, then every later update.
pub(super) async fn catch_up(
    socket: &mut WebSocket,
    state: &AppState,
    sub: &mut Subscriber,
    rx: &mut LiveReceiver,
) -> Result<(), End> {
    state.metrics.lag_catchups.inc();
    let from = Position {
        seq: sub.seq,
        widen_seq: sub.widen_seq,
    };
    let Subscription {
        live: fresh_rx,
        position: pos,
    } = state.bus.subscribe_from(from);
    *rx = fresh_rx;
    let missed = read_missed(state, sub, pos)
        .await
        .map_err(|e| End::Unavailable(e.to_string()))?;
    for u in missed {
        let id = Arc::from(u.envelope.update_id.as_str());
        deliver(socket, state, sub, update_frame(&u.envelope), id).await?;
    }
    sub.seq = sub.seq.max(pos.seq);
    sub.widen_seq = sub.widen_seq.max(pos.widen_seq);
    Ok(())
}

/// What a lagging subscriber skipped, up to `pos` (see [`catch_up`]).
pub(super) async fn read_missed(
    state: &AppState,
    sub: &Subscriber,
    pos: Position,
) -> Result<Vec<StoredUpdate>, crate::core::distributor::Error> {
    let _slot = state.read_slot().await?;
    let mut out: Vec<StoredUpdate> = state
        .log
        .widened_between(sub.seq, sub.widen_seq, pos.widen_seq)
        .await?
        .into_iter()
        .filter(|(u, from)| sub.newly_admitted(u, *from))
        .map(|(u, _)| u)
        .collect();
    let who = sub.snapshot();
    let keep = Box::new(move |u: &StoredUpdate| who.wants(u));
    out.extend(
        state
            .log
            .updates_between(sub.seq, pos.seq, pos.widen_seq, keep)
            .await?,
    );
    Ok(out)
}
