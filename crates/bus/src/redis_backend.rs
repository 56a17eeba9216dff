//! The Redis side of the bus: one dedicated subscriber connection, kept
//! alive by a task that reconnects with backoff. After every (re)connection it
//! first subscribes to every watched channel, then tells every subscriber to
//! [`BusMessage::Resync`](crate::BusMessage::Resync): whatever was published
//! while it was away is read from the journal, so a lost message costs
//! latency, not data.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::{Registry, MAX_BACKOFF, REDIS_TIMEOUT};

/// A change of what the subscriber connection listens to.
pub(crate) enum Ctl {
    Watch(String),
    Unwatch(String),
}

/// Runs until every handle of the bus is gone (the control channel closes).
pub(crate) async fn subscriber_loop(
    client: redis::Client,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    registry: Arc<Registry>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        let connected = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub()).await;
        let (mut sink, mut stream) = match connected {
            Ok(Ok(pubsub)) => pubsub.split(),
            _ => {
                // Interest changes while Redis is away are read from the registry on reconnection.
                let wait = tokio::time::sleep(backoff);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        () = &mut wait => break,
                        cmd = ctl.recv() => if cmd.is_none() { return },
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        // Drain queued changes: the registry is the source of what is wanted now.
        while let Ok(cmd) = ctl.try_recv() {
            drop(cmd);
        }
        let mut subscribed: HashSet<String> = HashSet::new();
        let mut ok = true;
        for ch in registry.wanted() {
            if !matches!(tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(&ch)).await, Ok(Ok(()))) {
                ok = false;
                break;
            }
            subscribed.insert(ch);
        }
        if !ok {
            continue;
        }
        if !first {
            registry.metrics.reconnects.inc();
            tracing::info!("reconnected to the Redis bus");
        }
        first = false;
        backoff = Duration::from_millis(50);
        // Subscribed again: anything published meanwhile is in the journal.
        registry.resync_all();
        loop {
            tokio::select! {
                cmd = ctl.recv() => {
                    let result = match cmd {
                        None => return,
                        Some(Ctl::Watch(ch)) => if subscribed.insert(ch.clone()) {
                            tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(ch)).await
                        } else { Ok(Ok(())) },
                        Some(Ctl::Unwatch(ch)) => if subscribed.remove(&ch) {
                            tokio::time::timeout(REDIS_TIMEOUT, sink.unsubscribe(ch)).await
                        } else { Ok(Ok(())) },
                    };
                    if !matches!(result, Ok(Ok(()))) {
                        tracing::warn!("lost the Redis bus while changing subscriptions; reconnecting");
                        break;
                    }
                }
                msg = stream.next() => match msg {
                    Some(msg) => {
                        let Ok(payload) = msg.get_payload::<String>() else { continue };
                        registry.metrics.received.inc();
                        registry.dispatch(msg.get_channel_name(), &payload);
                    }
                    None => {
                        tracing::warn!("lost the Redis bus; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}
