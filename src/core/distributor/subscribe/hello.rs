//! The hello: reading and checking a subscriber's first frame (orch id, agent path, tier,
//! agent token), and turning incoming WebSocket messages into protocol frames.

use super::*;

/// Waits for the hello; answers anything else with a violation.
pub(super) async fn wait_hello(
    socket: &mut WebSocket,
    state: &AppState,
    x402_header: Option<String>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(Subscriber, u64), End> {
    let deadline = Instant::now() + state.config.hello_timeout;
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => return Err(End::Shutdown),
            () = sleep_until(deadline) => {
                return Err(violation(
                    "hello_timeout",
                    format!("no hello within {:?} of connecting", state.config.hello_timeout),
                ));
            }
            msg = socket.recv() => msg,
        };
        let text = match incoming(msg)? {
            Some(text) => text,
            None => continue,
        };
        match parse_frame(&text)? {
            ClientFrame::Hello {
                orch_id,
                agent_path,
                last_seq,
                x402,
                token,
            } => {
                // Hashed as sent, exactly as the collector hashes telemetry's orch_id — also
                // when it looks like a hash: `orch_…` in a hello is an id, never a hash.
                if orch_id.trim().is_empty() || orch_id.len() > MAX_ORCH_ID {
                    return Err(violation(
                        "invalid_hello",
                        format!("orch_id must be 1 to {MAX_ORCH_ID} bytes"),
                    ));
                }
                check_agent_token(state, &orch_id, token.as_deref())?;
                let agent_path = agent_path.trim().trim_end_matches('/');
                validate_agent_path(agent_path)
                    .map_err(|m| violation("invalid_hello", format!("agent_path {m}")))?;
                let key = state.config.premium_key.as_deref();
                let tier = if Tier::from_key(key, x402.as_deref()) == Tier::Premium
                    || Tier::from_key(key, x402_header.as_deref()) == Tier::Premium
                {
                    Tier::Premium
                } else {
                    Tier::Free
                };
                let sub = Subscriber {
                    orch_hash: Arc::from(state.anonymizer.orch_hash(&orch_id)),
                    agent_path: agent_path.into(),
                    tier,
                    seq: 0,
                    widen_seq: 0,
                };
                return Ok((sub, last_seq));
            }
            ClientFrame::Ack { .. } => {
                return Err(violation(
                    "expected_hello",
                    "the first frame must be a hello",
                ));
            }
        }
    }
}

/// Refuses a hello whose agent token is wrong, or missing where tokens are required.
pub(super) fn check_agent_token(
    state: &AppState,
    orch_id: &str,
    token: Option<&str>,
) -> Result<(), End> {
    let cfg = &state.config;
    match (token, &cfg.agent_keys) {
        (Some(token), Some(keys)) if keys.verify(orch_id, token) => Ok(()),
        (Some(_), _) => Err(violation(
            "forbidden",
            "the agent token is not valid for this orch_id; ask the operator for a new one \
             (`phoenix agents token ORCH_ID`)",
        )),
        (None, _) if cfg.require_agent_tokens => Err(violation(
            "unauthorized",
            "this distributor requires an agent token: send it as `token` in hello \
             (the operator issues it with `phoenix agents token ORCH_ID`)",
        )),
        (None, _) => Ok(()),
    }
}

/// The text of a data frame; `None` for control frames; the end for anything else.
pub(super) fn incoming(
    msg: Option<Result<Message, axum::Error>>,
) -> Result<Option<Utf8Bytes>, End> {
    match msg {
        Some(Ok(Message::Text(t))) => Ok(Some(t)),
        Some(Ok(Message::Binary(_))) => Err(violation(
            "invalid_frame",
            "binary frames are not part of the protocol; send JSON text frames",
        )),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(None),
        Some(Ok(Message::Close(_))) => Err(End::PeerClosed),
        None => Err(End::Gone),
        Some(Err(e)) => {
            let too_long = e
                .into_inner()
                .downcast_ref::<tokio_tungstenite::tungstenite::Error>()
                .is_some_and(|t| matches!(t, tokio_tungstenite::tungstenite::Error::Capacity(_)));
            if too_long {
                Err(too_large())
            } else {
                Err(End::Gone)
            }
        }
    }
}

pub(super) fn too_large() -> End {
    violation(
        "frame_too_large",
        format!("frames are limited to {MAX_FRAME_BYTES} bytes"),
    )
}

pub(super) fn parse_frame(text: &str) -> Result<ClientFrame, End> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(too_large());
    }
    serde_json::from_str(text)
        .map_err(|e| violation("invalid_frame", format!("not a protocol frame: {e}")))
}
