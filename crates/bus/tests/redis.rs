//! The bus on the Redis at 127.0.0.1:6379: what one process publishes reaches
//! another's subscribers, and presence written by one is read by the other.

use std::time::Duration;

use chrono::Utc;
use filesync_bus::{next_matching, Bus, BusMessage, Topic};
use filesync_core::events::{UserEvent, WorkspaceEvent};
use filesync_core::proto::presence::PresenceEntry;
use filesync_core::{UserId, WorkspaceId};

const REDIS: &str = "redis://127.0.0.1:6379";

/// A prefix of its own, so parallel runs never see each other's messages.
fn prefix() -> String {
    format!("filesync-test-{}", std::process::id())
}

#[tokio::test]
async fn publications_cross_processes_and_presence_is_shared() {
    let prefix = prefix();
    let (api, node) = (Bus::redis(REDIS, &prefix).unwrap(), Bus::redis(REDIS, &prefix).unwrap());
    let ws = WorkspaceId(41);
    let mut sub = node.subscribe_to(&[Topic::Workspace(ws), Topic::User(UserId(7))]);
    // The subscriber says Resync once it is (re)subscribed on Redis.
    let ready = next_matching(&mut sub, Duration::from_secs(5), |m| (m == BusMessage::Resync).then_some(())).await;
    assert!(ready.is_some(), "the subscriber connects to Redis");
    // Subscriptions are set up asynchronously: publish until one arrives.
    let mut got = None;
    for _ in 0..50 {
        assert!(api.publish_workspace_stamped(ws, &WorkspaceEvent::Committed { workspace_id: ws, seq: 3 }).await);
        got = next_matching(&mut sub, Duration::from_millis(100), |m| match m {
            BusMessage::Workspace { workspace_id, event, committed_at } => Some((workspace_id, event, committed_at)),
            _ => None,
        })
        .await;
        if got.is_some() {
            break;
        }
    }
    let (workspace_id, event, committed_at) = got.expect("the commit crosses Redis");
    assert_eq!((workspace_id, event), (ws, WorkspaceEvent::Committed { workspace_id: ws, seq: 3 }));
    assert!(committed_at.is_some());
    assert!(api.publish_user(UserId(7), &UserEvent::MemberRemoved { workspace_id: ws }).await);
    let user = next_matching(&mut sub, Duration::from_secs(5), |m| match m {
        BusMessage::User { user_id, event } => Some((user_id, event)),
        _ => None,
    })
    .await;
    assert_eq!(user, Some((UserId(7), UserEvent::MemberRemoved { workspace_id: ws })));

    let entry = PresenceEntry {
        node_id: format!("{prefix}-node"),
        session_id: "s1".into(),
        user_id: UserId(7),
        device_id: "d1".into(),
        device_name: "Laptop".into(),
        peer_addr: "127.0.0.1:1".into(),
        connected_at: Utc::now(),
    };
    node.presence().add(&entry).await;
    let seen = api.presence().devices_of(&[UserId(7)]).await.unwrap();
    assert!(seen.iter().any(|e| e.node_id == entry.node_id), "{seen:?}");
    node.presence().remove(&entry).await;
    let seen = api.presence().devices_of(&[UserId(7)]).await.unwrap();
    assert!(!seen.iter().any(|e| e.node_id == entry.node_id), "{seen:?}");
}

#[tokio::test]
async fn deployments_with_other_prefixes_do_not_hear_each_other() {
    let (mine, theirs) = (prefix() + "-mine", prefix() + "-theirs");
    let (bus, other) = (Bus::redis(REDIS, &mine).unwrap(), Bus::redis(REDIS, &theirs).unwrap());
    let ws = WorkspaceId(7);
    let mut sub = bus.subscribe_to(&[Topic::Workspace(ws)]);
    let ready = next_matching(&mut sub, Duration::from_secs(5), |m| (m == BusMessage::Resync).then_some(())).await;
    assert!(ready.is_some(), "the subscriber connects to Redis");
    let event = WorkspaceEvent::Committed { workspace_id: ws, seq: 1 };
    let mut heard_own = false;
    for _ in 0..50 {
        assert!(other.publish_workspace(ws, &event).await);
        assert!(bus.publish_workspace(ws, &event).await);
        if next_matching(&mut sub, Duration::from_millis(100), |m| {
            matches!(m, BusMessage::Workspace { .. }).then_some(())
        })
        .await
        .is_some()
        {
            heard_own = true;
            break;
        }
    }
    assert!(heard_own, "its own deployment's publication arrives");
    // Whatever of our own is still in flight, then only the other deployment publishes.
    let any_commit = |m: BusMessage| matches!(m, BusMessage::Workspace { .. }).then_some(());
    while next_matching(&mut sub, Duration::from_millis(300), any_commit).await.is_some() {}
    assert!(other.publish_workspace(ws, &event).await);
    let heard_other = next_matching(&mut sub, Duration::from_millis(500), |m| {
        matches!(m, BusMessage::Workspace { .. }).then_some(())
    })
    .await;
    assert!(heard_other.is_none(), "another deployment's publication must not arrive");
}
